"""Replay a recorded IQ file (SigMF, SigMF archive, raw IQ, WAV) as a tagged complex stream."""

import time

import numpy as np
import pmt
from gnuradio import gr

from spectrumfm.errors import InputError
from spectrumfm.recording import iso_to_unix, open_recording

from .pmtutil import EOS, RX_FREQ, RX_RATE, RX_TIME

# Pacing lets the stream run this far ahead of the wall clock, so that work() hands out
# chunks of about this length instead of waking for every few samples.
_AHEAD_S = 0.02
# Longest single sleep: the scheduler can only stop a Python block between work() calls.
_SLEEP_STEP_S = 0.02
# With repeat, files up to this many samples are kept in memory so a short loop is one
# vectorised gather per call rather than one read per pass.
_CACHE_SAMPLES = 1 << 20


class file_source(gr.sync_block):
    """Replay a recording at its own sample rate, with the tags a live radio source gives.

    Output 0: complex64 samples scaled to [-1, 1), whatever the file's datatype.

    Tags (absolute offsets):
      - ``rx_rate`` (double, S/s) at offset 0;
      - ``rx_freq`` (double, Hz) at offset 0 when the centre is known, and again where a SigMF
        capture segment retunes (also at each loop restart if that changes the frequency);
      - ``rx_time`` (tuple of uint64 Unix seconds, double fraction) at offset 0 when the
        recording has a start time, and at each later capture that has one (first pass only:
        a looped replay is one continuing stream);
      - ``spectrumfm_eos`` (PMT_T) on the last sample of a finite replay; the next call ends
        the stream (WORK_DONE).

    Args:
      path: recording (``.sigmf-meta``/``.sigmf-data``/base name, ``.sigmf``, ``.wav``, raw IQ).
      format: one of ``spectrumfm.recording.FORMATS``; "" = from the file name (raw files only).
      samp_rate: sample rate in S/s; 0 = from the file (raw files need it).
      center_freq: centre frequency in Hz; 0 = from the file (0.0 when unknown).
      realtime: pace output to the wall clock (True) or run as fast as downstream takes it.
      repeat: loop the file forever (no end-of-stream unless ``duration`` is given).
      duration: stop after this many seconds of signal; 0 = the whole file (or forever).

    Raises spectrumfm.errors.InputError, unchanged, for a missing or malformed file.

    Pacing is built in rather than left to a separate throttle block because the tags and the
    end-of-stream must follow the file's own rate and the point where the file ends.
    """

    def __init__(self, path, format="", samp_rate=0.0, center_freq=0.0, realtime=True,
                 repeat=False, duration=0.0):
        gr.sync_block.__init__(self, name="spectrumfm_file_source", in_sig=None,
                               out_sig=[np.complex64])
        duration = float(duration)
        if not 0.0 <= duration < float("inf"):
            raise InputError(f"{path}: duration must be >= 0 seconds, got {duration:g}")
        self.recording = open_recording(path, format=format or None,
                                        samp_rate=float(samp_rate) or None,
                                        center_freq=float(center_freq) or None)
        rec = self.recording
        self.samp_rate = float(rec.samp_rate)
        self.center_freq = float(rec.center_freq) if rec.center_freq is not None else 0.0
        self.num_samples = int(rec.num_samples)
        self.realtime = bool(realtime)
        self.repeat = bool(repeat)
        self.samples_produced = 0
        # Total samples to emit, or None for an endless loop.
        if duration > 0:
            total = max(1, int(round(duration * self.samp_rate)))
            self._limit = total if self.repeat else min(total, self.num_samples)
        else:
            self._limit = None if self.repeat else self.num_samples
        self._t0 = None
        self._done = False
        self._cache = (rec.read(0, self.num_samples)
                       if self.repeat and self.num_samples <= _CACHE_SAMPLES else None)
        self._srcid = pmt.intern(self.alias())
        self._first_pass, self._loop_pass = self._plan_tags(rec)

    def _plan_tags(self, rec):
        """(file position, key, value) tags for the first pass and for each later pass."""
        caps = [c for c in rec.captures if c.sample_start < self.num_samples]
        first, loop = [(0, RX_RATE, pmt.from_double(self.samp_rate))], []
        if rec.datetime is not None:
            first.append((0, RX_TIME, self._time_pmt(rec.datetime)))
        last = None
        for i, c in enumerate(caps):
            freq = rec.center_freq if i == 0 else c.center_freq
            if freq is not None and freq != last:
                tag = (c.sample_start, RX_FREQ, pmt.from_double(float(freq)))
                first.append(tag)
                if i > 0:
                    loop.append(tag)
                last = freq
            if i > 0 and c.datetime is not None:
                first.append((c.sample_start, RX_TIME, self._time_pmt(c.datetime)))
        head = rec.center_freq
        if head is not None and last is not None and head != last:
            loop.insert(0, (0, RX_FREQ, pmt.from_double(float(head))))
        return first, loop

    @staticmethod
    def _time_pmt(iso):
        secs, frac = iso_to_unix(iso)
        return pmt.make_tuple(pmt.from_uint64(secs), pmt.from_double(frac))

    def _allowed(self, want):
        """How many samples may go out now without running ahead of the wall clock."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        while True:
            ahead = self.samples_produced / self.samp_rate - (now - self._t0)
            allowed = int((_AHEAD_S - ahead) * self.samp_rate)
            if allowed >= 1:
                return min(want, allowed)
            time.sleep(min(_SLEEP_STEP_S, max(1e-4, (1 - allowed) / self.samp_rate)))
            now = time.monotonic()

    def _fill(self, out, pos, n):
        """Write n samples from stream position pos (wrapping around the file) into out."""
        N = self.num_samples
        if self._cache is not None:
            idx = np.arange(pos, pos + n, dtype=np.int64) % N
            out[:n] = self._cache[idx]
            return
        filled = 0
        while filled < n:
            fpos = (pos + filled) % N
            chunk = self.recording.read(fpos, min(n - filled, N - fpos))
            out[filled:filled + len(chunk)] = chunk
            filled += len(chunk)

    def _tag(self, pos, n):
        """Tags whose stream position falls in [pos, pos + n)."""
        N, base = self.num_samples, self.nitems_written(0)
        passes = range(pos // N, (pos + n - 1) // N + 1)
        if not self._loop_pass:   # nothing to tag after the first pass: skip the others
            passes = passes[:1] if pos < N else ()
        for p in passes:
            for fpos, key, value in (self._first_pass if p == 0 else self._loop_pass):
                s = p * N + fpos
                if pos <= s < pos + n:
                    self.add_item_tag(0, base + (s - pos), key, value, self._srcid)

    def work(self, input_items, output_items):
        if self._done:
            return -1
        out = output_items[0]
        pos = self.samples_produced
        n = len(out)
        if self._limit is not None:
            n = min(n, self._limit - pos)
        if self.realtime:
            n = self._allowed(n)
        self._fill(out, pos, n)
        self._tag(pos, n)
        self.samples_produced = pos + n
        if self._limit is not None and self.samples_produced >= self._limit:
            self.add_item_tag(0, self.nitems_written(0) + n - 1, EOS, pmt.PMT_T, self._srcid)
            self._done = True
        return n
