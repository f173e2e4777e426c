"""`spectrumfm benchmark --pipeline`: what the inference engine costs beyond the model.

    spectrumfm benchmark --pipeline --model spectrumfm-tiny --device cuda --seconds 5 --json

For each task of the model (``--tasks``, default all its adapters), on the same device and
batch size:

* **bare**: the task runner called back to back on one batch already on the device (what
  ``spectrumfm benchmark`` times for the encoder alone, here with features, LoRA-merged
  backbone and head);
* **worker**: the same runner fed through :class:`~spectrumfm.infer.worker.InferenceWorker`
  from the host, as a flowgraph feeds it: jobs of ``--job-windows`` windows (one slot of a
  16-channel grid by default) submitted in lossless mode as fast as the worker takes them,
  so the device never waits for the submitter. The difference is the pipeline's overhead:
  queueing, the copy into the pinned buffer and to the device, the copy back, splitting
  results per job;
* **paced**: jobs submitted at half the worker's rate in live (dropping) mode, for the
  latency a stream sees when the model keeps up (arrival -> result, p50 / p95).

The last line with ``--json`` is ``{"pipeline": true, "model", "device", "batch", "tasks":
{task: {"bare_windows_per_s", "worker_windows_per_s", "overhead_pct", "mean_batch",
"latency_p50_s", "latency_p95_s", ...}}, "band": {"2.4e6": {...}, "20e6": {...}}}``.

``band`` is the whole band analysis (:func:`band_results`): a rendered scene at 2.4 MS/s
(RTL-SDR) and 20 MS/s (USRP) through :class:`~spectrumfm.infer.band.BandAnalyzer` in chunks
of 65536 samples and the worker, every task: live (real-time arrival, drops allowed:
real-time factor of the stream side, share of windows analysed, windows dropped, latency,
decisions per task) and lossless (the real-time factor when nothing may be dropped).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from spectrumfm.errors import InputError

DEFAULT_MODEL = "spectrumfm-tiny"
DEFAULT_BATCH = 256
# One slot of the default 16-channel occupancy grid: the job size a live stream submits.
DEFAULT_JOB_WINDOWS = 16


def _register_shipped_models() -> None:
    from spectrumfm.infer.bundle import add_search_dir
    try:
        from ._paths import DATA_DIR
    except ImportError:       # running from the source tree: only $SPECTRUMFM_MODELS
        return
    add_search_dir(Path(DATA_DIR) / "models")


def measure_bare(runner, *, batch: int, seconds: float, warmup: float, device) -> dict:
    """The runner alone on a device-resident batch; :func:`benchmark.measure`'s dict."""
    import torch

    from .benchmark import measure

    x = torch.randn(batch, runner.window_len, dtype=torch.complex64,
                    generator=torch.Generator().manual_seed(0)).to(device)
    return measure(runner, x, seconds=seconds, warmup=warmup, device=device)


def _worker(task, runner, *, batch, device, lossless, queue, max_latency_s=0.01):
    from spectrumfm.infer.worker import InferenceWorker

    return InferenceWorker({task: runner}, lambda job, probs: None, device=device,
                           window_len=runner.window_len, max_batch=batch,
                           max_latency_s=max_latency_s, max_queue_windows=queue,
                           lossless=lossless)


def _windows(n: int, window_len: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, window_len)) +
            1j * rng.standard_normal((n, window_len))).astype(np.complex64)


def measure_worker(task, runner, *, batch: int, job_windows: int, seconds: float,
                   warmup: float, device) -> dict:
    """Windows/s through a saturated lossless worker (the submitter waits for room)."""
    from spectrumfm.infer.worker import Job

    x = _windows(job_windows, runner.window_len)
    # Two batches queued keep the device busy; a deeper queue only lengthens the drain.
    worker = _worker(task, runner, batch=batch, device=device, lossless=True,
                     queue=2 * batch + job_windows)
    worker.start()
    t_end = time.perf_counter() + warmup
    while time.perf_counter() < t_end or worker.stats()["batches"] < 3:
        worker.submit(Job(task, x))
    before, t0 = worker.stats(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        worker.submit(Job(task, x))
    # Windows finished in the timed stretch; the queue still holding work is not counted.
    after, t1 = worker.stats(), time.perf_counter()
    worker.close()
    done = after["windows_analyzed"] - before["windows_analyzed"]
    batches = after["batches"] - before["batches"]
    return {"windows_per_s": done / (t1 - t0), "batches": batches,
            "mean_batch": done / batches if batches else 0.0, "errors": after["errors"]}


def measure_paced(task, runner, *, rate: float, batch: int, job_windows: int,
                  seconds: float, device) -> dict:
    """Latency and share analysed with jobs arriving at ``rate`` windows/s (live mode)."""
    from spectrumfm.infer.worker import Job

    x = _windows(job_windows, runner.window_len)
    worker = _worker(task, runner, batch=batch, device=device, lossless=False,
                     queue=max(4 * batch, 8192))
    worker.start()
    period = job_windows / rate
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds:
        worker.submit(Job(task, x))
        k += 1
        delay = t0 + k * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    worker.close()
    s = worker.stats()
    return {"offered_windows_per_s": rate, "latency_p50_s": s["latency_p50_s"],
            "latency_p95_s": s["latency_p95_s"], "mean_batch": s["mean_batch"],
            "share_analyzed": s["windows_analyzed"] / s["windows_in"] if s["windows_in"]
            else 0.0}


# Band analysis streams: an RTL-SDR's and a USRP's rate, read in chunks of the size a
# flowgraph's work() typically brings, from a rendered scene this long, looped.
BAND_RATES = {"2.4e6": 2.4e6, "20e6": 20e6}
BAND_CHUNK = 65536
BAND_SCENE_S = 0.5


def band_stream(rate: float, *, seconds: float = BAND_SCENE_S, seed: int = 1):
    """A rendered random scene at ``rate`` (a few technology emitters, 5 to 25 dB SNR over
    unit noise), trimmed to whole chunks: complex64."""
    import numpy as np

    from spectrumfm.synth.core import get, names
    from spectrumfm.synth.scenes import random_scene, render

    pool = [n for n in names("technology") if n != "noise" and
            get("technology", n).min_rate <= 0.8 * rate]
    scene = random_scene(np.random.default_rng(seed), rate, 0.0, seconds, pool, 4,
                         snr_range=(5.0, 25.0), seed=seed)
    x, _ = render(scene)
    return x[:max(1, x.size // BAND_CHUNK) * BAND_CHUNK].astype(np.complex64, copy=False)


def measure_band(bundle, x, rate: float, *, lossless: bool, seconds: float, batch: int) -> dict:
    """The stream side (BandAnalyzer.process, then InferenceWorker.submit) fed ``x`` in a loop
    for ``seconds`` of wall time, every task of the bundle.

    Live (``lossless=False``): chunks arrive at their real-time pace (the feeder sleeps when
    ahead) and the worker drops whole jobs when its queue is full, as ``spectrumfm run``
    does; the real-time factor is signal seconds over the stream thread's own busy time
    (analyzer + submit), the share analysed and the latency are what a live stream gets.
    Lossless: chunks as fast as they go, the submitter waiting for room; the real-time factor
    is signal seconds over the whole wall time until the last result.
    """
    from collections import Counter

    from spectrumfm.infer.band import BandAnalyzer
    from spectrumfm.infer.worker import InferenceWorker

    analyzer = BandAnalyzer(bundle.runners, rate, 0.0, window_len=bundle.window_len,
                            device=bundle.device)
    decisions: Counter = Counter()

    def on_result(job, probs):                 # the worker thread, as in a flowgraph
        decisions[job.task] += len(analyzer.decide(job, probs))

    # A queue of four batches, not the live block's 8192 windows: the drain after the timed
    # stretch stays short on a slow device. The share analysed once the queue is full does
    # not depend on its size; the latency of an overloaded stream does (queue / throughput).
    worker = InferenceWorker(bundle.runners, on_result, device=bundle.device,
                             window_len=bundle.window_len, max_batch=batch,
                             max_latency_s=0.05, max_queue_windows=4 * batch,
                             lossless=lossless)
    submitted, dropped = Counter(), Counter()
    worker.start()
    pos, busy = 0, 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        i = pos % x.size
        arrival = t0 + (pos + BAND_CHUNK) / rate if not lossless else time.monotonic()
        if not lossless and arrival > time.monotonic():
            time.sleep(arrival - time.monotonic())
        ta = time.monotonic()
        for job in analyzer.process(x[i:i + BAND_CHUNK], pos, t_arrival=arrival):
            submitted[job.task] += len(job.windows)
            if not worker.submit(job):
                dropped[job.task] += len(job.windows)
        busy += time.monotonic() - ta
        pos += BAND_CHUNK
    worker.close()
    wall = time.monotonic() - t0
    st = worker.stats()
    signal_s = pos / rate
    return {
        "real_time_factor": round(signal_s / (wall if lossless else busy), 3),
        "signal_s": round(signal_s, 3), "wall_s": round(wall, 3),
        "share_analyzed": round(st["windows_analyzed"] / st["windows_in"], 4)
        if st["windows_in"] else None,
        "windows_submitted": st["windows_in"], "windows_analyzed": st["windows_analyzed"],
        "windows_dropped": st["windows_dropped"],
        "latency_p50_s": st["latency_p50_s"], "latency_p95_s": st["latency_p95_s"],
        "mean_batch": st["mean_batch"], "max_queue_windows": st["max_queue_windows"],
        "errors": st["errors"],
        "tasks": {t: {"windows": submitted[t], "windows_dropped": dropped[t],
                      "decisions": decisions[t]} for t in bundle.runners},
        "emissions_skipped": analyzer.emissions_skipped,
    }


def band_results(bundle, args) -> dict:
    """The band analysis per stream rate: ``{"2.4e6": {"live": {...}, "lossless": {...}},
    "20e6": {...}}``.

    The full chain (channelizer, energy detector, emission cut-outs, every task of the
    bundle, decisions) on a rendered scene at an RTL-SDR's and a USRP's rate, in
    chunks of 65536 samples; see :func:`measure_band` for the two modes.
    """
    batch = DEFAULT_BATCH if args.batch is None else args.batch
    out = {}
    for key, rate in BAND_RATES.items():
        x = band_stream(rate)
        out[key] = {"samp_rate": rate, "chunk": BAND_CHUNK,
                    "scene_s": round(x.size / rate, 3)}
        for mode in ("live", "lossless"):
            out[key][mode] = measure_band(bundle, x, rate, lossless=mode == "lossless",
                                          seconds=args.seconds, batch=batch)
        live, lossless = out[key]["live"], out[key]["lossless"]
        ms = (lambda v: "n/a" if v is None else f"{1e3 * v:.0f} ms")
        share = live["share_analyzed"]
        print(f"  band {rate / 1e6:g} MS/s: live real-time factor "
              f"{live['real_time_factor']:.2f} (analyzer + submit), "
              f"{'n/a' if share is None else f'{100 * share:.1f} %'} of "
              f"{live['windows_submitted']} windows analysed ({live['windows_dropped']} "
              f"dropped), latency p50 {ms(live['latency_p50_s'])}, p95 "
              f"{ms(live['latency_p95_s'])}; lossless real-time factor "
              f"{lossless['real_time_factor']:.2f}")
        print("    decisions (live / lossless): " + ", ".join(
            f"{t} {live['tasks'][t]['decisions']} / {lossless['tasks'][t]['decisions']}"
            for t in bundle.runners))
    return out


def run(args) -> int:
    import torch

    from spectrumfm.infer.bundle import load_bundle
    from spectrumfm.infer.device import configure_cpu_threads

    from .benchmark import _cpu_name

    batch = DEFAULT_BATCH if args.batch is None else args.batch
    job_windows = DEFAULT_JOB_WINDOWS if args.job_windows is None else args.job_windows
    if batch < 1 or job_windows < 1 or args.seconds <= 0 or args.warmup < 0:
        raise InputError("--batch and --job-windows must be >= 1, --seconds > 0 and "
                         "--warmup >= 0")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    else:                       # what `spectrumfm run` uses beside its flowgraph
        configure_cpu_threads()
    _register_shipped_models()
    bundle = load_bundle(args.model or DEFAULT_MODEL, args.tasks, args.device,
                         compile=args.compile)
    device = bundle.device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(f"{bundle.describe()} [{where}], batch {batch}, jobs of {job_windows} windows, "
          f"{args.seconds:g} s per measurement")
    tasks = {}
    for task, runner in bundle.runners.items():
        bare = measure_bare(runner, batch=batch, seconds=args.seconds, warmup=args.warmup,
                            device=device)
        through = measure_worker(task, runner, batch=batch, job_windows=job_windows,
                                 seconds=args.seconds, warmup=args.warmup, device=device)
        paced = measure_paced(task, runner, rate=0.5 * through["windows_per_s"], batch=batch,
                              job_windows=job_windows, seconds=min(args.seconds, 3.0),
                              device=device)
        overhead = 100.0 * (1.0 - through["windows_per_s"] / bare["windows_per_s"])
        tasks[task] = {
            "bare_windows_per_s": round(bare["windows_per_s"], 1),
            "bare_windows_per_s_median": round(bare["windows_per_s_median"], 1),
            "worker_windows_per_s": round(through["windows_per_s"], 1),
            "overhead_pct": round(overhead, 1), "mean_batch": round(through["mean_batch"], 1),
            "latency_p50_s": paced["latency_p50_s"], "latency_p95_s": paced["latency_p95_s"],
            "paced_windows_per_s": round(paced["offered_windows_per_s"], 1),
            "paced_share_analyzed": round(paced["share_analyzed"], 4),
            "errors": through["errors"]}
        ms = (lambda v: "n/a" if v is None else f"{1e3 * v:.1f} ms")
        print(f"  {task:<11} bare {bare['windows_per_s']:>11,.1f} windows/s, worker "
              f"{through['windows_per_s']:>11,.1f} windows/s (overhead {overhead:5.1f} %, "
              f"mean batch {through['mean_batch']:.0f}); at half that rate latency p50 "
              f"{ms(paced['latency_p50_s'])}, p95 {ms(paced['latency_p95_s'])}")
    band = band_results(bundle, args)
    if args.json:
        print(json.dumps({"pipeline": True, "model": bundle.name, "device": str(device),
                          "device_name": where, "batch": batch, "job_windows": job_windows,
                          "threads": torch.get_num_threads(), "compile": bool(args.compile),
                          "seconds": args.seconds, "tasks": tasks, "band": band,
                          "torch": torch.__version__}))
    return 0
