"""Energy detector block: occupancy grid and emission boxes as schema-v1 decisions."""

import collections
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from spectrumfm.detect import EnergyDetector, EnergyDetectorConfig

from .pmtutil import (EOS, GAP, PORT_DECISIONS, PORT_STATUS, RX_FREQ, RX_RATE, RX_TIME, dict_to_pmt,
                      to_float)

DETECTOR_TASKS = ("occupancy", "emission")
STATUS_PERIOD_S = 1.0
# Slots are analysed in batches of up to this much signal: one detector call costs about
# 0.8 ms however short its input, and work() usually brings one slot, so batching is what
# keeps up with 10 MS/s; it delays decisions by at most this (tags and EOS cut it short).
BATCH_S = 0.01


class energy_detector(gr.sync_block):
    """Classical energy detector (the baseline every model is compared to).

    Ports:
        in0: complex64 samples. Tags: ``rx_rate`` (pmt double, Hz) and ``rx_freq`` (Hz)
            retune the detector from their sample on (open boxes close at the old values and
            the slot in progress is discarded, since it spans the change); ``spectrumfm_gap``
            (uint64 samples lost before it) discards the slot in progress, closes every
            open emission box (no window spans the gap) and advances decision ``time`` by
            the samples lost; ``rx_time``
            (uint64 s, double frac) makes decision ``time`` UTC; ``spectrumfm_eos`` (on the
            last sample) analyses the partial slot if it holds at least one FFT frame and
            closes every open emission box.
        out0: complex64, a copy of in0. Decisions follow their samples by at most a batch
            (``BATCH_S``, 10 ms of signal); at the EOS tag every decision is posted before the
            tagged sample passes, so a SigMF recorder downstream ends after the last one.
        decisions (message out): schema-v1 decisions as PMT dicts; task "occupancy" (one per
            channel per slot, label occupied/vacant, score = probability occupied) and
            "emission" (a time–frequency box, with ``snr_db`` and ``noise_floor_db``).
        status (message out): a PMT dict at most once per second: windows_per_s,
            windows_analyzed, windows_dropped, latency_p50_s, latency_p95_s, noise_floor_db
            (noise variance per sample, dB full scale; None before the first slot),
            center_freq, samp_rate, model.

    Args:
        samp_rate: sample rate, Hz (until an ``rx_rate`` tag).
        center_freq: centre frequency, Hz (until an ``rx_freq`` tag).
        fft_size: FFT length, samples.
        frames_per_slot: FFT frames per slot; a slot (fft_size * frames_per_slot samples) is
            the occupancy grid's time step and the unit counted as a window analysed.
        n_channels: equal sub-bands of the occupancy grid; must divide fft_size.
        pfa: false-alarm probability per grid cell (see ``spectrumfm.detect.energy``).
        tasks: comma-separated subset of "occupancy,emission" to publish.
        model: the decisions' ``model`` field.
    """

    def __init__(self, samp_rate, center_freq=0.0, fft_size=256, frames_per_slot=16,
                 n_channels=16, pfa=1e-3, tasks="occupancy,emission", model="energy-detector"):
        gr.sync_block.__init__(self, name="spectrumfm_energy_detector",
                               in_sig=[np.complex64], out_sig=[np.complex64])
        self.tasks = tuple(t.strip() for t in str(tasks).split(",") if t.strip())
        unknown = [t for t in self.tasks if t not in DETECTOR_TASKS]
        if not self.tasks or unknown:
            raise ValueError(f"energy_detector tasks must be among {', '.join(DETECTOR_TASKS)}, "
                             f"got {tasks!r}")
        config = EnergyDetectorConfig(fft_size=int(fft_size), frames_per_slot=int(frames_per_slot),
                                      n_channels=int(n_channels), pfa=float(pfa))
        self.detector = EnergyDetector(config, float(samp_rate), float(center_freq), str(model),
                                       self.tasks)
        self.slot_len = config.slot_len
        self.message_port_register_out(PORT_DECISIONS)
        self.message_port_register_out(PORT_STATUS)
        self._lock = threading.RLock()    # setters and stats() come from other threads
        self._buf = np.zeros(0, np.complex64)   # samples of the slot in progress
        self._buf_start = 0                     # absolute index of _buf[0]
        self._slot_times = []                   # work() call time of each buffered whole slot
        self.samples_in = 0
        self.windows_analyzed = 0
        self.windows_dropped = 0          # the detector runs inline and never drops a slot
        self._latency = collections.deque(maxlen=4096)
        self._status_time = None
        self._status_windows = 0

    # -- settings (GRC callbacks) --------------------------------------------------------
    def set_pfa(self, pfa):
        with self._lock:
            self.detector.set_pfa(float(pfa))

    def set_center_freq(self, center_freq):
        with self._lock:
            self.detector.set_center_freq(float(center_freq))

    # -- stream ---------------------------------------------------------------------------
    def work(self, input_items, output_items):
        t_call = time.monotonic()
        x = input_items[0]
        n = len(x)
        output_items[0][:] = x
        start = self.nitems_read(0)
        self.samples_in += n
        with self._lock:
            if not self._buf.size:
                self._buf_start = start
            at = 0
            # Split the input at the tags that change how samples are interpreted; the rest
            # of each piece goes through in whole slots.
            for tag in sorted(self.get_tags_in_window(0, 0, n), key=lambda t: t.offset):
                rel = tag.offset - start
                if pmt.eq(tag.key, EOS):
                    self._analyse(x[at:rel + 1], t_call, until="end")
                    at = rel + 1
                elif pmt.eq(tag.key, GAP):
                    self._analyse(x[at:rel], t_call, until="slots")
                    at = rel
                    self._apply_gap(tag)
                elif any(pmt.eq(tag.key, key) for key in (RX_FREQ, RX_RATE, RX_TIME)):
                    self._analyse(x[at:rel], t_call, until="slots")
                    at = rel
                    self._apply_tag(tag)
            self._analyse(x[at:], t_call)
            self._maybe_post_status()
        return n

    def _analyse(self, x, t_call, until=None):
        """Append x to the slot buffer and analyse it: a batch of whole slots once one is
        buffered (until=None), every whole slot now ("slots", before a retune), or every whole
        frame and then the open boxes ("end"). Posts the decisions."""
        buf = np.concatenate([self._buf, x]) if self._buf.size else x
        done_before = self._buf.size // self.slot_len
        unit = self.detector.config.fft_size if until == "end" else self.slot_len
        usable = buf.size // unit * unit
        slots = -(-usable // self.slot_len)       # a final short slot counts as one
        self._slot_times.extend([t_call] * (slots - done_before))   # when each slot completed
        batch = max(1, int(BATCH_S * self.detector.samp_rate) // self.slot_len)
        if until is None and slots < batch:
            usable = slots = 0
        decisions = self.detector.process(buf[:usable], self._buf_start) if usable else []
        # Copy the rest: GNU Radio reuses the input buffer once work() returns.
        self._buf, self._buf_start = np.array(buf[usable:], np.complex64), self._buf_start + usable
        if until == "end":
            decisions += self.detector.flush()
            self._buf_start += self._buf.size     # a sub-frame rest cannot be analysed
            self._buf = np.zeros(0, np.complex64)
        self._post(decisions)
        if slots:
            now = time.monotonic()
            self.windows_analyzed += slots
            self._latency.extend(now - t for t in self._slot_times[:slots])
            del self._slot_times[:slots]

    def _apply_tag(self, tag):
        det = self.detector
        value = tag.value
        if pmt.eq(tag.key, RX_TIME):      # (uint64 whole seconds, double fraction), UTC
            if pmt.is_tuple(value) and pmt.length(value) == 2:
                secs, frac = to_float(pmt.tuple_ref(value, 0)), to_float(pmt.tuple_ref(value, 1))
                if secs is not None and frac is not None:
                    det.time_offset = secs + frac - tag.offset / det.samp_rate
            return
        new = to_float(value)
        if new is None or not np.isfinite(new) or (pmt.eq(tag.key, RX_RATE) and new <= 0):
            return                                 # malformed tag: keep the old setting
        old = det.center_freq if pmt.eq(tag.key, RX_FREQ) else det.samp_rate
        if new == old:
            return                                 # sources repeat their settings: no retune
        self._discard_partial(tag.offset)
        if pmt.eq(tag.key, RX_FREQ):
            det.set_center_freq(new)
        else:
            # Time keeps running from this sample at the new rate.
            det.time_offset += tag.offset / old - tag.offset / new
            det.set_samp_rate(new)
        self._post(det.process(np.zeros(0, np.complex64), tag.offset))

    def _apply_gap(self, tag):
        self._discard_partial(tag.offset)
        self._post(self.detector.flush())   # boxes end where the signal broke off
        lost = to_float(tag.value)         # time keeps counting the samples lost
        if lost is not None and np.isfinite(lost) and lost > 0:
            self.detector.time_offset += lost / self.detector.samp_rate

    def _discard_partial(self, offset):
        """The slot in progress spans a retune: drop it, resume at the tag's sample."""
        self._buf, self._buf_start, self._slot_times = np.zeros(0, np.complex64), offset, []

    def _post(self, decisions):
        for d in decisions:
            if d["task"] in self.tasks:
                self.message_port_pub(PORT_DECISIONS, dict_to_pmt(d))

    def stop(self):
        """Analyse what is buffered and close open boxes (a stream that ended without the
        EOS tag; downstream blocks may already be stopping, so EOS is the reliable way)."""
        with self._lock:
            self._analyse(np.zeros(0, np.complex64), time.monotonic(), until="end")
        return True

    # -- counters -------------------------------------------------------------------------
    def stats(self):
        """Counters: samples_in, windows_analyzed, windows_dropped, latency_p50_s/p95_s."""
        with self._lock:
            lat = np.array(self._latency) if self._latency else np.zeros(1)
        p50, p95 = np.percentile(lat, [50, 95])
        return {"samples_in": int(self.samples_in), "windows_analyzed": int(self.windows_analyzed),
                "windows_dropped": int(self.windows_dropped),
                "latency_p50_s": float(p50), "latency_p95_s": float(p95)}

    def _maybe_post_status(self):
        now = time.monotonic()
        if self._status_time is not None and now - self._status_time < STATUS_PERIOD_S:
            return
        elapsed = None if self._status_time is None else now - self._status_time
        rate = 0.0 if not elapsed else (self.windows_analyzed - self._status_windows) / elapsed
        self._status_time, self._status_windows = now, self.windows_analyzed
        det = self.detector
        status = self.stats()
        del status["samples_in"]
        status.update(windows_per_s=float(rate), noise_floor_db=det.noise_floor_db,
                      center_freq=det.center_freq, samp_rate=det.samp_rate, model=det.model)
        self.message_port_pub(PORT_STATUS, dict_to_pmt(status))
