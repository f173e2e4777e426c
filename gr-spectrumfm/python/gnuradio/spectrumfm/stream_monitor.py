"""Watches a radio's stream: samples delivered, overflows, a radio that stops delivering."""

import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from .pmtutil import EOS, GAP, RX_FREQ, RX_RATE, RX_TIME

_KEYS = ((RX_RATE, "rate"), (RX_FREQ, "freq"), (RX_TIME, "time"))


def _number(value):
    if pmt.is_uint64(value):
        return float(pmt.to_uint64(value))
    if pmt.is_integer(value) or pmt.is_real(value):
        return float(pmt.to_double(value))
    return None


class stream_monitor(gr.sync_block):
    """Pass-through after a radio source (GNU Radio's SoapySDR source, or any that tags).

    GNU Radio's SoapySDR source logs an overflow as ``sO`` and re-sends its ``rx_rate`` and
    ``rx_freq`` tags (and ``rx_time`` when the radio keeps time) on the first sample after
    it; a radio that is unplugged usually just stops giving samples. This block turns both
    into something a program can act on:

    - an ``rx_rate`` tag that repeats the current rate, at a sample where the frequency does
      not change, counts as an overflow and gets a ``spectrumfm_gap`` tag (samples lost:
      from the ``rx_time`` jump when the radio gives one, else 0 = unknown);
    - a thread watches the delivery: no sample for ``timeout`` seconds sets ``fault``
      (the caller stops the flowgraph: a block cannot, while no samples come);
    - ``duration`` ends the stream after that many samples' worth of seconds, with the
      ``spectrumfm_eos`` tag on the last one.

    Ports:
        in0: complex64 from the radio, with its tags.
        out0: the same samples and tags, plus ``spectrumfm_gap`` and ``spectrumfm_eos``.

    Args:
        samp_rate: S/s, until an ``rx_rate`` tag says otherwise.
        timeout: seconds without samples before ``fault`` is set (0: no watchdog).
        duration: seconds of signal after which the stream ends (0: never).

    Counters: stats() (samples_in, overflows, samples_dropped); ``samples_produced``.
    """

    def __init__(self, samp_rate, timeout=5.0, duration=0.0):
        gr.sync_block.__init__(self, name="spectrumfm_stream_monitor",
                               in_sig=[np.complex64], out_sig=[np.complex64])
        self.samp_rate = float(samp_rate)
        self.timeout = float(timeout)
        self._limit = int(round(float(duration) * self.samp_rate)) if duration else None
        self._freq = None
        self._time = None            # (offset, seconds) of the last rx_time
        self._done = False
        self._last = time.monotonic()
        self._stopping = threading.Event()
        self._thread = None
        self.fault = None
        self.samples_produced = 0
        self._counts = {"overflows": 0, "samples_dropped": 0}
        self._srcid = pmt.intern(self.alias())

    def start(self):
        self._last = time.monotonic()
        self._stopping.clear()
        if self.timeout > 0:
            self._thread = threading.Thread(target=self._watch, daemon=True,
                                            name="spectrumfm-watchdog")
            self._thread.start()
        return True

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        return True

    def _watch(self):
        while not self._stopping.wait(0.1):
            silent = time.monotonic() - self._last
            if silent > self.timeout and not self._done:
                self.fault = (f"no samples for {self.timeout:g} s (radio unplugged, "
                              f"or stopped streaming)")
                return

    def work(self, input_items, output_items):
        if self._done:
            return -1
        n = len(input_items[0])
        if self._limit is not None:
            n = min(n, self._limit - self.samples_produced)
        output_items[0][:n] = input_items[0][:n]
        self._last = time.monotonic()
        start = self.nitems_read(0)
        by_offset = {}
        for tag in self.get_tags_in_window(0, 0, n):
            for key, name in _KEYS:
                if pmt.eq(tag.key, key):
                    by_offset.setdefault(tag.offset, {})[name] = tag.value
        for offset in sorted(by_offset):
            self._on_tags(offset, by_offset[offset])
        self.samples_produced += n
        if self._limit is not None and self.samples_produced >= self._limit:
            self.add_item_tag(0, start + n - 1, EOS, pmt.PMT_T, self._srcid)
            self._done = True
        return n

    def _on_tags(self, offset, tags):
        rate = _number(tags.get("rate", pmt.PMT_NIL))
        freq = _number(tags.get("freq", pmt.PMT_NIL))
        t = tags.get("time")
        seconds = None
        if t is not None and pmt.is_tuple(t) and pmt.length(t) == 2:
            whole, frac = _number(pmt.tuple_ref(t, 0)), _number(pmt.tuple_ref(t, 1))
            seconds = None if whole is None or frac is None else whole + frac
        repeat = (offset > 0 and rate == self.samp_rate
                  and (freq is None or freq == self._freq))
        if repeat:
            lost = 0
            if seconds is not None and self._time is not None:
                expected = self._time[1] + (offset - self._time[0]) / self.samp_rate
                lost = max(0, int(round((seconds - expected) * self.samp_rate)))
            self._counts["overflows"] += 1
            self._counts["samples_dropped"] += lost
            self.add_item_tag(0, offset, GAP, pmt.from_uint64(lost), self._srcid)
        if rate is not None and rate > 0:
            self.samp_rate = rate
        if freq is not None:
            self._freq = freq
        if seconds is not None:
            self._time = (offset, seconds)

    def stats(self):
        """samples_in, overflows, samples_dropped (known losses; 0 when the radio keeps no
        time)."""
        return {**self._counts, "samples_in": self.samples_produced}
