"""The batching inference thread between a stream and the model.

A GNU Radio ``work()`` call must return quickly: it hands windows to :meth:`submit`, which
queues them and returns, and one worker thread turns the queue into batches for the device.
Batching is what makes a model affordable on a stream: a 128-sample window alone leaves a GPU
idle, 256 of them cost barely more. A batch holds windows of one task and is sent when it is
full (``max_batch`` windows) or when its oldest window has waited ``max_latency_s``, so a
quiet stream still gets answers within the latency bound.

When the model cannot keep up, the queue is bounded (``max_queue_windows``): a live stream
drops whole jobs (never half of a job, so no decision is made from part of its windows) and
counts them, and ``submit`` never blocks the flowgraph; in lossless mode (a recording, where
speed does not matter but every window does) ``submit`` waits for room instead.

Data path per batch: the jobs' windows are copied into one preallocated complex64 host buffer
(pinned on CUDA, so the copy to the device is a DMA that does not wait for the CPU), moved
with one ``.to(device, non_blocking=True)``, run, and brought back with one ``.cpu()``.
Each task has the window length of its runner (a SpectrumFM window of 128 samples, an
LWM-Spectro image's worth of IQ), and one buffer serves every task of a length.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

__all__ = ["Job", "InferenceWorker"]

log = logging.getLogger("spectrumfm")

# Latency percentiles over the whole run from a uniform sample of this many jobs (Vitter's
# algorithm R): memory stays bounded on a stream that runs for days.
_RESERVOIR = 4096
# windows_per_s is measured over the batches finished in this last stretch of time.
_RATE_WINDOW_S = 1.0


@dataclass
class Job:
    """Windows of one task to analyse, and what to hand back with their probabilities.

    Attributes:
        task: the runner's key (an engine task name).
        windows: complex64 ``(n, N)``, ``n >= 1``, N the task's window length; more than
            ``max_batch`` are split over batches and reassembled.
        context: opaque, given back to ``on_result`` (the analyzer's bookkeeping).
        t_arrival: ``time.monotonic()`` when its samples reached the flowgraph block: the
            latency statistics and the batching deadline count from it.
    """

    task: str
    windows: np.ndarray
    context: Any = None
    t_arrival: float = field(default_factory=time.monotonic)


class _Pending:
    """A queued job: how far it has been batched and the probabilities gathered so far."""

    __slots__ = ("job", "n", "next", "done", "out", "failed")

    def __init__(self, job: Job):
        self.job, self.n = job, len(job.windows)
        self.next = 0          # first window not yet put in a batch
        self.done = 0          # windows whose probabilities are in self.out
        self.out: np.ndarray | None = None
        self.failed = False


def _rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak (other Unixes)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class InferenceWorker:
    """One thread that batches :class:`Job` windows through task runners.

    Args:
        runners: task -> callable ``(B, N) complex64 tensor on device -> (B, C) probabilities``
            (a :class:`~spectrumfm.infer.bundle.TaskRunner`); N is the runner's
            ``window_len`` where it has one, else ``window_len``.
        on_result: ``on_result(job, probs (n, C) float32 numpy)``, called on the worker
            thread in completion order; it must be quick (it delays the next batch).
        device: the runners' device (str or torch.device).
        window_len: N of the runners that do not give their own.
        max_batch: most windows per runner call.
        max_latency_s: longest a window waits for its batch to fill (s).
        max_queue_windows: queue bound in windows; beyond it jobs are dropped (or, lossless,
            ``submit`` waits). A job larger than the bound is admitted into an empty queue.
            A runner's inputs longer than ``window_len`` (LWM-Spectro's images) count as
            the windows of ``window_len`` they hold, rounded up, so that the bound caps the
            queue's memory and backlog whatever the model.
        lossless: block the submitter instead of dropping.
    """

    def __init__(self, runners: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
                 on_result: Callable[[Job, np.ndarray], None], *, device, window_len: int = 128,
                 max_batch: int = 256, max_latency_s: float = 0.05,
                 max_queue_windows: int = 8192, lossless: bool = False):
        if max_batch < 1 or max_queue_windows < 1 or max_latency_s < 0 or window_len < 1:
            raise ValueError("InferenceWorker needs max_batch, max_queue_windows, window_len "
                             ">= 1 and max_latency_s >= 0")
        self.runners = dict(runners)
        self.on_result = on_result
        self.device = torch.device(device)
        self.window_len, self.max_batch = int(window_len), int(max_batch)
        self.max_latency_s, self.max_queue_windows = float(max_latency_s), int(max_queue_windows)
        self.lossless = bool(lossless)
        # Pinned memory lets .to(device, non_blocking=True) be an asynchronous DMA. Nothing
        # else may write the buffer until the batch's results are back on the host, which
        # the single thread guarantees (.cpu() waits for the device).
        pin = self.device.type == "cuda"
        self._lens = {t: int(getattr(r, "window_len", None) or self.window_len)
                      for t, r in self.runners.items()}
        self._host = {n: torch.empty((self.max_batch, n), dtype=torch.complex64, pin_memory=pin)
                      for n in sorted(set(self._lens.values()))}
        self._host_np = {n: h.numpy() for n, h in self._host.items()}
        self._places = {t: -(-n // self.window_len) for t, n in self._lens.items()}
        self._queues: dict[str, collections.deque[_Pending]] = {
            t: collections.deque() for t in self.runners}
        self._queued = {t: 0 for t in self.runners}     # windows not yet batched, per task
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)   # the thread waits for jobs
        self._room = threading.Condition(self._lock)   # lossless submitters wait for room
        self._thread: threading.Thread | None = None
        self._closing = False
        self._rng = random.Random(0)
        self._seen_errors: set[tuple[str, str]] = set()
        self._t_start = time.monotonic()
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._latencies: list[float] = []
        self._n_latencies = 0
        self._counts = dict(windows_in=0, windows_analyzed=0, windows_dropped=0,
                            windows_failed=0, jobs_in=0, jobs_done=0, jobs_dropped=0,
                            queue_windows=0, batches=0, errors=0)
        self._busy_s = 0.0

    # ---- the submitting side (GNU Radio's work thread) -------------------------------------

    def start(self) -> None:
        """Start the worker thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is not None:
                return
            self._t_start = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="spectrumfm-inference",
                                            daemon=True)
            self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False when it was dropped whole (queue full, or worker closed).

        Never blocks unless lossless, where it waits for room (but not after close()).

        Raises:
            ValueError: an unknown task or windows that are not ``(n >= 1, N)``.
        """
        if job.task not in self._queues:
            raise ValueError(f"no runner for task {job.task!r} (runners: "
                             f"{', '.join(self._queues)})")
        w = np.asarray(job.windows)
        n_len = self._lens[job.task]
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] != n_len:
            raise ValueError(f"job windows must be (n >= 1, {n_len}), got {w.shape}")
        if w.dtype != np.complex64:
            w = w.astype(np.complex64)
        job.windows = w
        n = len(w)
        with self._lock:
            c = self._counts
            c["windows_in"] += n
            c["jobs_in"] += 1
            if self.lossless:
                while not self._closing and not self._fits(n, job.task):
                    self._room.wait()
            if self._closing or not self._fits(n, job.task):
                c["windows_dropped"] += n
                c["jobs_dropped"] += 1
                return False
            self._queues[job.task].append(_Pending(job))
            self._queued[job.task] += n
            c["queue_windows"] += n
            self._work.notify()
        return True

    def _fits(self, n: int, task: str) -> bool:
        """Room for ``n`` windows of ``task`` (each taking ``_places[task]`` places of the
        bound). Dropping (not lossless), a task also keeps to its share of the queue (an
        equal part, at least one batch): a slow task (anomaly's seven passes a window) then
        drops its own jobs instead of filling the queue for every task."""
        places = self._places[task]
        q = sum(self._queued[t] * self._places[t] for t in self._queued)
        if not (q + n * places <= self.max_queue_windows or q == 0):
            return False
        if self.lossless:
            return True
        share = max(self.max_batch * places, self.max_queue_windows // len(self._queues))
        mine = self._queued[task] * places
        return mine + n * places <= share or mine == 0

    def close(self, timeout: float | None = None) -> None:
        """Analyse what is queued, then stop the thread (waiting at most ``timeout`` s)."""
        if self._thread is None:
            self.start()   # jobs submitted before start() are still answered
        with self._lock:
            self._closing = True
            self._work.notify_all()
            self._room.notify_all()
        self._thread.join(timeout)

    def discard(self) -> int:
        """Drop every queued window (a stop that cannot wait for the model); they count as
        dropped. The batch being analysed, if any, finishes. Returns how many went."""
        with self._lock:
            gone = 0
            for task, q in self._queues.items():
                while q:
                    p = q.popleft()
                    left = p.n - p.next
                    self._queued[task] -= left
                    gone += left
                    if p.next == 0:
                        self._counts["jobs_dropped"] += 1
            self._counts["queue_windows"] -= gone
            self._counts["windows_dropped"] += gone
            self._room.notify_all()
            self._work.notify_all()
        return gone

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict:
        """Counters and rates (see the module docstring); latencies None before any result.

        Keys: windows_in, windows_analyzed, windows_dropped, windows_failed, jobs_in,
        jobs_done, jobs_dropped, queue_windows, max_queue_windows, latency_p50_s,
        latency_p95_s, windows_per_s, batches, mean_batch, busy_fraction, device,
        memory_bytes, errors, lossless.
        """
        now = time.monotonic()
        with self._lock:
            out = dict(self._counts)
            lat = np.asarray(self._latencies, dtype=np.float64)
            self._trim_recent(now)
            recent = sum(n for _, n in self._recent)
            busy = self._busy_s
        span = min(_RATE_WINDOW_S, max(now - self._t_start, 1e-9))
        if self.device.type == "cuda":
            memory = int(torch.cuda.max_memory_allocated(self.device))
        else:
            memory = _rss_bytes()
        out.update(
            max_queue_windows=self.max_queue_windows,
            latency_p50_s=float(np.percentile(lat, 50)) if lat.size else None,
            latency_p95_s=float(np.percentile(lat, 95)) if lat.size else None,
            windows_per_s=recent / span,
            mean_batch=out["windows_analyzed"] / out["batches"] if out["batches"] else 0.0,
            busy_fraction=min(1.0, busy / max(now - self._t_start, 1e-9)),
            device=str(self.device), memory_bytes=memory, lossless=self.lossless)
        return out

    # ---- the worker thread ---------------------------------------------------------------------

    def _trim_recent(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - _RATE_WINDOW_S:
            self._recent.popleft()

    def _next_batch(self):
        """Under the lock: wait until a batch is due; its task and [(pending, lo, hi)].

        Returns None when closing and nothing is left.
        """
        while True:
            now = time.monotonic()
            full_task, oldest_task, oldest = None, None, None
            for task, q in self._queues.items():
                while q and q[0].failed:       # a failed job's remaining windows go too
                    self._discard(task, q.popleft())
                if not q:
                    continue
                if full_task is None and self._queued[task] >= self.max_batch:
                    full_task = task
                if oldest is None or q[0].job.t_arrival < oldest:
                    oldest_task, oldest = task, q[0].job.t_arrival
            # An overdue window goes first, oldest first, so that one busy task cannot
            # starve another's by always having a full batch ready.
            overdue = oldest is not None and (self._closing or now - oldest >= self.max_latency_s)
            due_task = oldest_task if overdue else full_task
            if due_task is not None:
                return due_task, self._take(due_task)
            if oldest is None and self._closing:
                return None
            timeout = None if oldest is None else oldest + self.max_latency_s - now
            self._work.wait(timeout)

    def _take(self, task: str) -> list:
        q, pieces, room = self._queues[task], [], self.max_batch
        while q and room:
            p = q[0]
            m = min(room, p.n - p.next)
            pieces.append((p, p.next, p.next + m))
            p.next += m
            room -= m
            if p.next == p.n:
                q.popleft()
        taken = self.max_batch - room
        self._queued[task] -= taken
        self._counts["queue_windows"] -= taken
        self._room.notify_all()
        return pieces

    def _discard(self, task: str, p: _Pending) -> None:
        left = p.n - p.next
        self._queued[task] -= left
        self._counts["queue_windows"] -= left
        self._counts["windows_failed"] += left
        self._room.notify_all()

    def _error(self, where: str, exc: BaseException) -> None:
        kind = (where, type(exc).__name__)
        with self._lock:
            self._counts["errors"] += 1
            first = kind not in self._seen_errors
            self._seen_errors.add(kind)
        if first:   # once per kind: a broken runner on a stream would log 20 times a second
            log.error("inference %s failed (%s: %s); counting further %s errors silently",
                      where, type(exc).__name__, exc, type(exc).__name__, exc_info=exc)

    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._next_batch()
            if batch is None:
                return
            self._run_batch(*batch)

    def _run_batch(self, task: str, pieces: list) -> None:
        total, n_len = 0, self._lens[task]
        host, host_np = self._host[n_len], self._host_np[n_len]
        for p, lo, hi in pieces:      # (B, N) host buffer <- each job's slice, in order
            host_np[total:total + hi - lo] = p.job.windows[lo:hi]
            total += hi - lo
        t0 = time.monotonic()
        try:
            x = host[:total].to(self.device, non_blocking=True)
            probs = self.runners[task](x).float().cpu().numpy()
            if probs.ndim != 2 or len(probs) != total:
                raise ValueError(f"runner {task!r} returned shape {probs.shape} for "
                                 f"{total} windows")
        except Exception as exc:    # a bad batch must not end the stream's analysis
            self._error(f"runner {task!r}", exc)
            if self.device.type == "cuda":
                # The next batch overwrites the pinned buffer: the failed batch's copy
                # from it must be over first.
                try:
                    torch.cuda.synchronize(self.device)
                except Exception:
                    pass
            with self._lock:
                self._busy_s += time.monotonic() - t0
                for p, lo, hi in pieces:
                    self._counts["windows_failed"] += hi - lo
                    p.failed = True
            return
        now = time.monotonic()
        finished = []
        with self._lock:
            self._busy_s += now - t0
            self._counts["batches"] += 1
            self._counts["windows_analyzed"] += total
            self._recent.append((now, total))
            self._trim_recent(now)
            k = 0
            for p, lo, hi in pieces:
                part = probs[k:k + hi - lo]
                if (lo, hi) == (0, p.n):
                    p.out = part
                else:                            # a job split over batches
                    if p.out is None:
                        p.out = np.empty((p.n, probs.shape[1]), np.float32)
                    p.out[lo:hi] = part
                k += hi - lo
                p.done += hi - lo
                if p.done == p.n and not p.failed:
                    finished.append(p)
        for p in finished:
            try:
                self.on_result(p.job, p.out)
            except Exception as exc:
                self._error("on_result", exc)
            done = time.monotonic()
            with self._lock:
                self._counts["jobs_done"] += 1
                self._record_latency(done - p.job.t_arrival)

    def _record_latency(self, dt: float) -> None:
        self._n_latencies += 1
        if len(self._latencies) < _RESERVOIR:
            self._latencies.append(dt)
        else:
            j = self._rng.randrange(self._n_latencies)
            if j < _RESERVOIR:
                self._latencies[j] = dt
