"""Inference block: a spectrum foundation model's task adapters as schema-v1 decisions."""

import collections
import logging
import math
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from .pmtutil import (EOS, GAP, PORT_DECISIONS, PORT_STATUS, RX_FREQ, RX_RATE, RX_TIME, dict_to_pmt,
                      to_float)

log = logging.getLogger("spectrumfm")

# Stream tag on out0: a decision (PMT dict), on the first output sample after it was made.
DECISION_TAG = pmt.intern("spectrumfm_decision")
STATUS_PERIOD_S = 1.0
# stop() (Ctrl-C, a lost radio) waits at most this long for the queued windows, then drops
# the rest and waits at most STOP_BATCH_S for the batch on the device: `spectrumfm run`
# gives the whole flowgraph 10 s to stop.
STOP_DRAIN_S = 4.0
STOP_BATCH_S = 3.0
# Decisions waiting to become stream tags; a flowgraph whose output is not consumed must
# not grow memory, so the oldest go (messages carry every decision regardless).
MAX_PENDING_TAGS = 20000
# Counters summed over the workers of a stream that ended (EOS) and went on.
_SUMMED = ("windows_in", "windows_analyzed", "windows_dropped", "windows_failed", "jobs_dropped",
           "batches", "errors")


def _finite(value, default=0.0):
    """Status and stats values go out as JSON without NaN (the publisher refuses it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return default
    return value


class inference(gr.sync_block):
    """Runs a spectrum foundation model's task adapters on a complex stream.

    The stream is analysed by a ``BandAnalyzer`` (channeliser, framing into N-sample
    windows, emission boxes for technology/modulation) in ``work()``, and the windows go to
    an ``InferenceWorker`` thread that batches them onto the device (GPU when there is one).
    work() never runs the model: with ``lossless`` off (live radios, ``--realtime``), a job
    that finds the worker's queue full is dropped whole and counted; with ``lossless`` on
    (``--fast`` replays) work() waits for room, so every window is analysed.

    Ports:
        in0: complex64 samples. Tags: ``rx_rate``/``rx_freq`` (pmt double, Hz) retune the
            analysis from their sample on (the slot in progress is discarded, open emission
            boxes close); ``rx_time`` (uint64 s, double frac) makes decision ``time`` UTC;
            ``spectrumfm_gap`` (uint64 samples lost) discards the slot in progress, closes
            open boxes and advances decision time by the samples lost; ``spectrumfm_eos`` (on
            the last sample) flushes the analysis and waits for every decision, which are all
            posted before the tagged sample passes (a SigMF recorder downstream gets them all).
        out0: complex64, a copy of in0, with a ``spectrumfm_decision`` tag (value: the
            decision as a PMT dict) on the first output sample after each decision was made.
        decisions (message out): schema-v1 decisions as PMT dicts: occupancy (per channel
            and slot: occupied/vacant, score = P(occupied)), anomaly (anomalous/normal),
            technology and modulation (per emission box: label, score, snr_db). ``model`` is
            "<model>/<adapter>", e.g. "spectrumfm-tiny/technology".
        status (message out): a PMT dict at most once per second: windows_per_s,
            windows_analyzed, windows_dropped, queue_windows, max_queue_windows,
            latency_p50_s, latency_p95_s (samples reaching work() to decision), device,
            memory_bytes, tasks, model, center_freq, samp_rate.

    Args:
        samp_rate: sample rate, Hz (until an ``rx_rate`` tag).
        center_freq: centre frequency, Hz (until an ``rx_freq`` tag).
        model: a model name (a folder in the model search path) or a model folder.
        tasks: comma-separated among occupancy, anomaly, technology, modulation; empty: every
            task the model has an adapter for.
        device: "auto", "cpu", "cuda" or "cuda:N".
        lossless: wait for the worker instead of dropping windows (replays only).
        n_channels: channeliser sub-bands for occupancy/anomaly.
        slot_s: occupancy/anomaly time step, seconds.
        pfa: false-alarm probability of the energy statistic (emission boxes, fusion).
        max_batch: windows per batch on the device.
        max_latency_s: a partial batch goes once its oldest window waited this long, s.
        max_queue_windows: the worker's queue bound, windows; beyond it jobs are dropped.
    """

    def __init__(self, samp_rate, center_freq=0.0, model="spectrumfm-tiny", tasks="",
                 device="auto", lossless=False, n_channels=16, slot_s=0.05, pfa=1e-3,
                 max_batch=256, max_latency_s=0.05, max_queue_windows=8192):
        gr.sync_block.__init__(self, name="spectrumfm_inference",
                               in_sig=[np.complex64], out_sig=[np.complex64])
        from spectrumfm.infer.band import BandAnalyzer
        from spectrumfm.infer.bundle import load_bundle

        names = [t.strip() for t in str(tasks).split(",") if t.strip()]
        self.bundle = load_bundle(str(model), names or None, str(device))
        if self.bundle.device.type == "cpu":
            from spectrumfm.infer.device import configure_cpu_threads

            # Every core for the model starves the flowgraph's threads (and the model).
            configure_cpu_threads()
        self.tasks = tuple(self.bundle.runners)
        self.samp_rate, self.center_freq = float(samp_rate), float(center_freq)
        self.analyzer = BandAnalyzer(self.bundle.runners, self.samp_rate, self.center_freq,
                                     n_channels=int(n_channels), slot_s=float(slot_s),
                                     pfa=float(pfa), window_len=self.bundle.window_len,
                                     device=self.bundle.device)
        self.lossless = bool(lossless)
        self._worker_kw = dict(device=self.bundle.device, window_len=self.bundle.window_len,
                               max_batch=int(max_batch), max_latency_s=float(max_latency_s),
                               max_queue_windows=int(max_queue_windows), lossless=self.lossless)
        self.message_port_register_out(PORT_DECISIONS)
        self.message_port_register_out(PORT_STATUS)
        # _alock guards the analyzer (work() and the worker's on_result); it is never held
        # while submitting, since a lossless submit waits for on_result to make room.
        self._alock = threading.RLock()
        self._tags = collections.deque(maxlen=MAX_PENDING_TAGS)   # decisions still to tag
        self._worker = None
        self._retiring = None             # the last worker retired (its thread may outlive stop)
        self._aborted = threading.Event()
        self._wlock = threading.Lock()    # the worker's swap at an EOS against stats()
        self._retired = {}                # summed counters of workers closed at an EOS
        self._retired_latency = (0.0, 0.0)
        self._last = None                 # the last retired worker's stats
        self.samples_in = 0
        self.decisions_out = 0
        self._status_time = None
        self._status_windows = 0

    # -- worker lifecycle -----------------------------------------------------------------
    def _ensure_worker(self):
        if self._worker is None:
            from spectrumfm.infer.worker import InferenceWorker

            self._worker = InferenceWorker(self.bundle.runners, self._on_result, **self._worker_kw)
            self._worker.start()
        return self._worker

    def _retire_worker(self, timeout=None):
        """Drain and stop the worker: every queued job gets its decisions posted (within
        ``timeout`` seconds when given, and only until :meth:`abort`)."""
        worker = self._retiring = self._worker
        if worker is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        worker.close(0)
        while worker.alive and not self._aborted.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            worker.close(0.1)
        if deadline is not None and worker.alive:   # stop(): the last chance, even aborted
            worker.close(max(0.0, deadline - time.monotonic()))
        if worker.alive:
            log.warning("inference: stopped with %d windows still queued (not analysed)",
                        worker.stats().get("queue_windows", 0))
            _discard_queued(worker)
            worker.close(STOP_BATCH_S)
        st = worker.stats()
        with self._wlock:
            self._last = st
            for key in _SUMMED:
                self._retired[key] = self._retired.get(key, 0) + int(st.get(key, 0) or 0)
            if st.get("windows_analyzed"):
                self._retired_latency = (st.get("latency_p50_s") or 0.0,
                                         st.get("latency_p95_s") or 0.0)
            self._worker = None

    def start(self):
        self._aborted.clear()
        self._ensure_worker()
        return True

    def abort(self):
        """The flowgraph is being stopped (Ctrl-C): stop waiting for the model in work()
        (a lossless submit, the drain at EOS) so that the scheduler can stop; stop() then
        gives the queued windows at most ``STOP_DRAIN_S``. Call before ``tb.stop()``; any
        thread."""
        self._aborted.set()
        worker = self._worker
        if worker is not None:
            worker.close(0)    # wakes a waiting submit (its job counts as dropped)

    def stop(self):
        """Flush the analysis, drain the worker and post the last decisions (a stream that
        ended without the EOS tag, or Ctrl-C; EOS is the reliable way, since downstream
        blocks may already be stopping)."""
        with self._alock:
            jobs = self.analyzer.flush()
        if jobs:
            self._submit(jobs)
        self._retire_worker(STOP_DRAIN_S)
        return True

    def _submit(self, jobs):
        if self._aborted.is_set() and self._worker is None:
            return                 # stopping: no new worker (nothing would wait for it)
        worker = self._ensure_worker()
        for job in jobs:
            worker.submit(job)     # False: dropped, counted by the worker

    def _on_result(self, job, probs):
        """Worker thread: decisions for one job, posted now and tagged by the next work()."""
        with self._alock:
            decisions = self.analyzer.decide(job, probs)
        for d in decisions:
            self.message_port_pub(PORT_DECISIONS, dict_to_pmt(d))
        self._tags.extend(decisions)
        self.decisions_out += len(decisions)

    # -- settings -------------------------------------------------------------------------
    def set_center_freq(self, center_freq):
        with self._alock:
            self.center_freq = float(center_freq)
            self.analyzer.retune(center_freq=self.center_freq)

    # -- stream ---------------------------------------------------------------------------
    def work(self, input_items, output_items):
        t_call = time.monotonic()
        x = input_items[0]
        n = len(x)
        output_items[0][:] = x
        start = self.nitems_read(0)
        first_out = self.nitems_written(0)
        self._tag_pending(first_out)
        self.samples_in += n
        at = 0
        # Split the input at the tags that change how samples are interpreted; the analyzer
        # keeps partial slots between calls itself.
        for tag in sorted(self.get_tags_in_window(0, 0, n), key=lambda t: t.offset):
            rel = tag.offset - start
            if pmt.eq(tag.key, EOS):
                self._process(x[at:rel + 1], start + at, t_call)
                at = rel + 1
                with self._alock:
                    jobs = self.analyzer.flush()
                self._submit(jobs)
                self._retire_worker()           # every decision posted before EOS passes
                self._tag_pending(first_out + rel)
            elif pmt.eq(tag.key, GAP):
                self._process(x[at:rel], start + at, t_call)
                at = rel
                self._apply_gap(tag)
            elif any(pmt.eq(tag.key, key) for key in (RX_FREQ, RX_RATE, RX_TIME)):
                self._process(x[at:rel], start + at, t_call)
                at = rel
                self._apply_tag(tag)
        self._process(x[at:], start + at, t_call)
        self._maybe_post_status()
        return n

    def _process(self, x, sample_start, t_call):
        if not len(x):
            return
        with self._alock:   # the analyzer copies x into its history ring
            jobs = self.analyzer.process(x, sample_start, t_call)
        if jobs:
            self._submit(jobs)

    def _tag_pending(self, offset):
        while self._tags:
            try:
                d = self._tags.popleft()
            except IndexError:
                break
            self.add_item_tag(0, offset, DECISION_TAG, dict_to_pmt(d))

    def _apply_tag(self, tag):
        value = tag.value
        with self._alock:
            an = self.analyzer
            if pmt.eq(tag.key, RX_TIME):   # (uint64 whole seconds, double fraction), UTC
                if pmt.is_tuple(value) and pmt.length(value) == 2:
                    secs = to_float(pmt.tuple_ref(value, 0))
                    frac = to_float(pmt.tuple_ref(value, 1))
                    if secs is not None and frac is not None:
                        an.time_offset = secs + frac - tag.offset / self.samp_rate
                return
            new = to_float(value)
            if new is None or not np.isfinite(new) or (pmt.eq(tag.key, RX_RATE) and new <= 0):
                return                     # malformed tag: keep the old setting
            # Sources repeat their settings: the analyzer retunes only on a change (and
            # advances its time_offset on a new rate); boxes it closes come as jobs with
            # the next process() call.
            if pmt.eq(tag.key, RX_FREQ):
                self.center_freq = new
                an.retune(center_freq=new)
            else:
                self.samp_rate = new
                an.retune(samp_rate=new)

    def _apply_gap(self, tag):
        lost = to_float(tag.value)   # time keeps counting the samples lost
        lost = int(lost) if lost is not None and np.isfinite(lost) and lost > 0 else 0
        with self._alock:             # open boxes' jobs come with the next process()
            self.analyzer.gap(lost)

    # -- counters -------------------------------------------------------------------------
    def _worker_stats(self):
        """The worker's counters, summed over the workers retired at an EOS."""
        with self._wlock:
            live = self._worker.stats() if self._worker is not None else None
            st = dict(live or self._last or {})
            for key in _SUMMED:
                st[key] = (int(live.get(key) or 0) if live else 0) + self._retired.get(key, 0)
            if not (live and live.get("latency_p50_s") is not None):
                st["latency_p50_s"], st["latency_p95_s"] = self._retired_latency
        st["mean_batch"] = st["windows_analyzed"] / st["batches"] if st["batches"] else 0.0
        return st

    def busy(self):
        """True while a worker thread still runs (a batch outlived stop()'s wait)."""
        worker = self._worker if self._worker is not None else self._retiring
        return worker is not None and worker.alive

    def stats(self):
        """Counters: samples_in, windows_analyzed, windows_dropped, jobs_dropped,
        windows_failed (a runner error; windows still queued when stop() gave up count as
        dropped),
        latency_p50_s/p95_s (s), windows_per_s, queue_windows, batches, mean_batch,
        memory_bytes, errors, decisions, device, model, tasks."""
        st = self._worker_stats()
        out = {"samples_in": int(self.samples_in),
               "windows_analyzed": int(st.get("windows_analyzed", 0)),
               "windows_dropped": int(st.get("windows_dropped", 0)),
               "jobs_dropped": int(st.get("jobs_dropped", 0)),
               "windows_failed": int(st.get("windows_failed", 0)),
               "latency_p50_s": float(_finite(st.get("latency_p50_s") or 0.0)),
               "latency_p95_s": float(_finite(st.get("latency_p95_s") or 0.0)),
               "windows_per_s": float(_finite(st.get("windows_per_s") or 0.0)),
               "queue_windows": int(st.get("queue_windows", 0) or 0),
               "max_queue_windows": int(self._worker_kw["max_queue_windows"]),
               "batches": int(st.get("batches", 0)),
               "mean_batch": float(_finite(st.get("mean_batch") or 0.0)),
               "memory_bytes": int(st.get("memory_bytes", 0) or 0),
               "errors": int(st.get("errors", 0)),
               "decisions": int(self.decisions_out),
               "lossless": self.lossless,
               "device": str(self.bundle.device), "model": self.bundle.name,
               "tasks": list(self.tasks)}
        return out

    def _maybe_post_status(self):
        now = time.monotonic()
        if self._status_time is not None and now - self._status_time < STATUS_PERIOD_S:
            return
        status = self.stats()
        elapsed = None if self._status_time is None else now - self._status_time
        if elapsed:     # over the whole period, so a status after a pause is not stale
            status["windows_per_s"] = (status["windows_analyzed"] - self._status_windows) / elapsed
        self._status_time, self._status_windows = now, status["windows_analyzed"]
        del status["samples_in"]
        status.update(center_freq=self.center_freq, samp_rate=self.samp_rate)
        self.message_port_pub(PORT_STATUS, dict_to_pmt(status))


def _discard_queued(worker):
    """Make the worker drop its queued windows (counted as dropped) and end after the batch
    it is running."""
    worker.discard()


def model_tasks(model):
    """Engine tasks a model folder has adapters for, in ``ENGINE_TASKS`` order.

    Raises InputError (via ``resolve_model``) when the model cannot be found.
    """
    from spectrumfm.infer.bundle import ADAPTER_FOR, ENGINE_TASKS, adapter_tasks, resolve_model

    present = adapter_tasks(resolve_model(str(model)))
    return [t for t in ENGINE_TASKS if ADAPTER_FOR[t] in present]
