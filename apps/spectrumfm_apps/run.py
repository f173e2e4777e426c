"""`spectrumfm run`: replay a recording, or run a live radio, through the analysis path.

    source ─┬─► spectrum_tap ─► zmq_publisher            (with --zmq)
            └─► analysis_chain ─┬─► sigmf_recorder        (with --record; else null sink)
                                └─► triggered_capture     (with --capture-on)
                    └─ decisions ─► decision_file_sink (--decisions), zmq_publisher,
                                    sigmf_recorder annotations, triggered_capture, the summary

The source is a file_source, or a live radio (``radio.py``: a SoapySDR device followed by a
stream_monitor, or an rtl_tcp client) watched by ``live.Supervisor``.

Exit status: 0 (done, or Ctrl-C), 2 (bad input, an unknown device), 3 (the radio could not
be reached, or was lost mid-stream: what was decided and recorded until then is kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

from spectrumfm.errors import InputError, RadioError

from . import live

log = logging.getLogger("spectrumfm")

DEFAULT_ZMQ = "tcp://127.0.0.1:5557"
SOURCES = ("file", "soapy", "rtl_tcp")
DETECTOR_FFT = 256
STOP_TIMEOUT_S = 10.0
# After a radio fault, how long the samples already produced get to drain through the
# flowgraph (the source has ended its stream) before the rest is stopped.
FAULT_DRAIN_S = 3.0
EXIT_RADIO = 3
DEFAULT_MODEL = "spectrumfm-tiny"
ENERGY_DETECTOR = "energy-detector"


def add_parser(sub):
    from spectrumfm.recording import FORMATS

    p = sub.add_parser("run", help="replay a recording, or run live when no PATH is given",
                       description="Replay a recording through the analysis path and publish, "
                                   "write and record what it decides.")
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="recording: .sigmf-meta/.sigmf-data/.sigmf, raw IQ (.cf32 .cfile .fc32 "
                        ".ci16 .cs16 .cs8 .ci8 .cu8) or two-channel .wav")
    p.add_argument("--source", choices=SOURCES, help="file when PATH is given")
    p.add_argument("--args", default="", help="device string (live sources)")
    p.add_argument("-f", "--freq", type=float, help="centre frequency in Hz (overrides metadata)")
    p.add_argument("-s", "--samp-rate", type=float, help="sample rate in Hz (raw files need it)")
    p.add_argument("-g", "--gain", default="auto", help="gain in dB, or 'auto' (live sources; "
                                                        "default auto)")
    p.add_argument("--format", choices=FORMATS, help="sample format of a raw file")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=True,
                      help="replay at the recording's own rate (default)")
    pace.add_argument("--fast", dest="realtime", action="store_false",
                      help="replay as fast as the analysis goes (lossless)")
    p.add_argument("--loop", action="store_true", help="replay the file over and over")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds of signal")
    p.add_argument("--tasks",
                   help="comma-separated: occupancy, anomaly, technology, modulation with a "
                        "model (default: every task it has an adapter for); occupancy, "
                        "emission with the energy detector (default: both)")
    p.add_argument("--model",
                   help=f"a model name (a folder of the installed models/), a model folder, or "
                        f"{ENERGY_DETECTOR} (the classical baseline); default {DEFAULT_MODEL}, "
                        f"or {ENERGY_DETECTOR} when that is not installed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto: the "
                                                    "GPU when there is one)")
    # Advanced: the model's queue and batch (a tiny queue shows windows being dropped).
    p.add_argument("--queue-windows", type=int, help=argparse.SUPPRESS)
    p.add_argument("--max-batch", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--zmq", nargs="?", const=DEFAULT_ZMQ, metavar="ADDRESS",
                   help=f"publish spectrum, decision and status messages (default address "
                        f"{DEFAULT_ZMQ}: localhost only)")
    p.add_argument("--decisions", metavar="FILE.jsonl", help="write every decision, one JSON per line")
    p.add_argument("--record", metavar="FILE.sigmf-meta",
                   help="record the IQ with decisions as SigMF annotations")
    p.add_argument("--stats", metavar="FILE.json", help="write run statistics at exit")
    p.add_argument("--headless", action="store_true", help="no dashboard window")
    p.add_argument("--fft-size", type=int, default=1024, help="spectrum rows' FFT size (default 1024)")
    p.add_argument("--channels", type=int, default=16,
                   help="occupancy grid sub-bands, dividing 256 (default 16)")
    p.add_argument("--slot", type=float, default=0.05,
                   help="occupancy grid time step in seconds (default 0.05)")
    p.add_argument("--pfa", type=float, default=1e-3, help="detector false-alarm rate per cell")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on standard output")
    live.add_arguments(p)
    p.set_defaults(func=main)
    return p


def _check_args(args):
    args.source = args.source or ("file" if args.path else None)
    if args.source is None:
        raise InputError("no recording given and no live --source: give PATH, or --source soapy|rtl_tcp")
    if args.source == "file" and not args.path:
        raise InputError("--source file needs a PATH")
    if args.source != "file" and args.path:
        raise InputError(f"--source {args.source} reads a radio, not {args.path}; drop PATH or "
                         f"--source")
    for name in ("freq", "samp_rate", "duration", "pfa"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise InputError(f"--{name.replace('_', '-')}: not a finite number: {value}")
    if args.samp_rate is not None and args.samp_rate <= 0:
        raise InputError(f"--samp-rate must be positive, got {args.samp_rate:g}")
    if args.duration < 0:
        raise InputError(f"--duration must not be negative, got {args.duration:g}")
    if not 0 < args.pfa < 0.5:
        raise InputError(f"--pfa must be in (0, 0.5), got {args.pfa:g}")
    if args.fft_size < 16 or args.fft_size & (args.fft_size - 1):
        raise InputError(f"--fft-size must be a power of two >= 16, got {args.fft_size}")
    if args.channels < 1 or DETECTOR_FFT % args.channels:
        raise InputError(f"--channels must divide {DETECTOR_FFT} (1, 2, 4, ... 256), got {args.channels}")
    if not (math.isfinite(args.slot) and args.slot > 0):
        raise InputError(f"--slot must be a positive number of seconds, got {args.slot:g}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        raise InputError(f"--device {args.device}: expected auto, cpu or cuda[:N]")
    if args.queue_windows is None:
        # Live and real-time: a short queue (4 batches) bounds the decision latency when the
        # model falls behind; --fast waits for the model anyway, a long queue keeps it busy.
        args.queue_windows = 8192 if not args.realtime else 4 * args.max_batch
    if args.queue_windows < 1 or args.max_batch < 1:
        raise InputError("--queue-windows and --max-batch must be at least 1")
    for name in ("decisions", "stats"):
        path = getattr(args, name)
        if path:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise InputError(f"--{name} {path}: directory {parent} does not exist")
    live.check_args(args, args.source != "file")
    # The model last: the other checks are cheap and say what is wrong on their own.
    _resolve_model(args)
    try:
        from gnuradio.spectrumfm.analysis_chain import parse_tasks
        parse_tasks(args.tasks, args.model)
    except ValueError as exc:
        raise InputError(f"--tasks {args.tasks}: {exc}") from None


def _resolve_model(args):
    """Fill in --model and --tasks. The default model is the shipped one when it is
    installed, else the energy detector (with a notice). A model's default tasks are those
    it has adapters for. --device is checked only when a model runs (InputError if bad)."""
    if args.model == ENERGY_DETECTOR:
        # The classical chain needs no PyTorch: keep its start-up light (no model lookup).
        args.tasks = args.tasks or "occupancy,emission"
        return
    from spectrumfm.infer import bundle

    from ._paths import DATA_DIR

    from gnuradio.spectrumfm.inference import model_tasks

    bundle.add_search_dir(os.path.join(DATA_DIR, "models"))
    if args.model is None:
        try:
            why = None if model_tasks(DEFAULT_MODEL) else "has no task adapters"
        except InputError:
            why = "is not installed"
        args.model = ENERGY_DETECTOR if why else DEFAULT_MODEL
        if why:
            log.info("the shipped model %s %s: using the energy detector (--model %s)",
                     DEFAULT_MODEL, why, ENERGY_DETECTOR)
    if args.model == ENERGY_DETECTOR:
        args.tasks = args.tasks or "occupancy,emission"
        return
    if args.device.startswith("cuda"):
        # Refused now, before a radio is opened; "auto" says which device it took when the
        # engine starts.
        from spectrumfm.infer.device import resolve_device
        resolve_device(args.device)
    if not args.tasks:
        tasks = model_tasks(args.model)
        if not tasks:
            raise InputError(f"--model {args.model}: the model has no task adapters "
                             f"(adapters/<task>/ folders)")
        args.tasks = ",".join(tasks)


def _source(args, tb, parts):
    """The source's output block; parts["source"] gets what has samp_rate, center_freq,
    samples_produced (the file_source block, or the live radio)."""
    from gnuradio import spectrumfm

    if args.source == "file":
        parts["source"] = spectrumfm.file_source(
            args.path, args.format or "", args.samp_rate or 0.0,
            args.freq if args.freq is not None else 0.0, args.realtime, args.loop, args.duration)
        return parts["source"]
    from .radio import open_radio

    parts["source"] = open_radio(args)
    return parts["source"].connect(tb)


def build(args):
    """Build the flowgraph; returns (top_block, parts dict). Raises InputError on bad input."""
    from gnuradio import blocks, gr
    from gnuradio import spectrumfm

    from .summary import decision_collector

    tb = gr.top_block("spectrumfm run")
    parts = {}
    src = _source(args, tb, parts)
    rate, freq = parts["source"].samp_rate, parts["source"].center_freq
    # --fast replays wait for the model (every window analysed); real-time replays and live
    # radios never wait for it: windows it cannot take are dropped and counted.
    lossless = args.source == "file" and not args.realtime
    chain = spectrumfm.analysis_chain(rate, freq, args.tasks, DETECTOR_FFT, args.slot,
                                      args.channels, args.pfa, args.model, args.device, lossless,
                                      args.max_batch, 0.05, args.queue_windows)
    if args.model != ENERGY_DETECTOR:
        log.info("%s; %s", chain.detector.bundle.describe(),
                 "lossless (--fast)" if lossless else "drops windows when it falls behind")
    collector = decision_collector()
    parts.update(chain=chain, collector=collector)
    tb.connect(src, chain)
    tb.msg_connect(chain, "decisions", collector, "decisions")
    label = args.path or parts["source"].label
    if args.record:
        parts["recorder"] = spectrumfm.sigmf_recorder(args.record, rate, freq,
                                                     description=f"spectrumfm run {label}")
        tb.connect(chain, parts["recorder"])
        tb.msg_connect(chain, "decisions", parts["recorder"], "annotations")
    else:
        parts["null"] = blocks.null_sink(gr.sizeof_gr_complex)
        tb.connect(chain, parts["null"])
    if args.decisions:
        parts["jsonl"] = spectrumfm.decision_file_sink(args.decisions)
        tb.msg_connect(chain, "decisions", parts["jsonl"], "decisions")
    if args.zmq:
        # Every Python block stays referenced in ``parts``: GNU Radio's gateway does not keep
        # the Python object alive, and a collected block crashes its scheduler thread.
        tap = parts["tap"] = spectrumfm.spectrum_tap(args.fft_size, 8, "hann")
        parts["publisher"] = spectrumfm.zmq_publisher(args.zmq, args.fft_size, rate, freq,
                                                     samples_per_row=args.fft_size * 8)
        tb.connect(src, tap, parts["publisher"])
        tb.msg_connect(chain, "decisions", parts["publisher"], "decisions")
        tb.msg_connect(chain, "status", parts["publisher"], "status")
    if args.capture_on:
        parts["capture"] = spectrumfm.triggered_capture(
            args.capture_dir, rate, freq, ";".join(args.capture_on), args.capture_pre,
            args.capture_post)
        tb.connect(chain, parts["capture"])
        tb.msg_connect(chain, "decisions", parts["capture"], "decisions")
    return tb, parts


def execute(tb, stop_event: threading.Event, supervisor=None, on_stop=None) -> bool:
    """Run until the stream ends, ``stop_event`` is set (Ctrl-C, SIGTERM) or the
    supervisor of a live radio reports a fault (``supervisor.tick()``, every 0.1 s); after a
    fault the graph first gets ``FAULT_DRAIN_S`` to drain what the source produced.

    ``on_stop`` (if given) is called just before ``tb.stop()``: the model's block stops
    waiting for its queue, so the scheduler can stop.

    Returns False when the flowgraph did not stop within ``STOP_TIMEOUT_S`` of being asked
    (a block thread that died leaves ``wait()`` hanging): the caller then exits without it.
    """
    done = threading.Event()
    tb.start()
    waiter = threading.Thread(target=lambda: (tb.wait(), done.set()), daemon=True)
    waiter.start()
    asked = False
    while not done.is_set():
        if stop_event.wait(0.1) or (supervisor is not None and supervisor.tick()):
            if stop_event.is_set():
                log.info("stopping: flushing decisions and recordings")
            elif done.wait(FAULT_DRAIN_S):
                # A faulted radio source ends its stream: what it produced has drained
                # through the graph (every sample recorded, every slot decided).
                break
            if on_stop is not None:
                on_stop()
            tb.stop()
            asked = True
            break
    waiter.join(STOP_TIMEOUT_S if asked else None)
    return done.is_set()


def write_stats(path, parts, wall_s):
    stats = dict(parts["chain"].stats())
    # The source's count, not the detector's: it includes samples still in flight at Ctrl-C.
    stats["samples_in"] = int(parts["source"].samples_produced)
    stats["overflows"] = 0
    stats.setdefault("model", getattr(parts["chain"], "model", ENERGY_DETECTOR))
    if "supervisor" in parts:   # a live radio: overflows, samples_dropped, reconnects
        stats.update(parts["source"].stats())
    stats["wall_s"] = round(wall_s, 3)
    stats["decisions"] = parts["collector"].total
    for name in ("recorder", "publisher", "jsonl", "capture"):
        if name in parts:
            stats[name] = parts[name].stats()
    if path:
        with open(path, "w") as fh:
            json.dump(stats, fh, indent=2, default=str)
            fh.write("\n")
    return stats


def _open_dashboard(address):
    """Start `spectrumfm dashboard --connect ADDRESS` as a child process (its own GUI
    process; it connects to the publisher and reconnects by itself). None if it cannot."""
    connect = address.replace("://*:", "://127.0.0.1:").replace("://0.0.0.0:", "://127.0.0.1:")
    try:
        child = subprocess.Popen([sys.executable, "-m", "spectrumfm_apps.dashboard", "--connect",
                                  connect], stdin=subprocess.DEVNULL)
    except OSError as exc:
        log.warning("could not open the dashboard (%s); running headless", exc)
        return None
    log.info("dashboard opened on %s (close its window, or --headless to run without it)",
             connect)
    return child


def _report_dashboard(child):
    """At the end of a run the window stays open for the user (theirs to close); say if it
    already failed."""
    if child is not None and child.poll() is not None and child.returncode:
        log.warning("the dashboard exited with status %d", child.returncode)


def main(args) -> int:
    _check_args(args)
    dashboard = None
    if not args.headless and os.environ.get("DISPLAY"):
        args.zmq = args.zmq or DEFAULT_ZMQ
        dashboard = _open_dashboard(args.zmq)
    try:
        tb, parts = build(args)
    except (RadioError, InputError) as exc:
        if dashboard is not None:   # nothing will ever feed it
            dashboard.terminate()
        if isinstance(exc, InputError):
            raise
        print(f"spectrumfm: error: {exc}", file=sys.stderr)
        return EXIT_RADIO
    supervisor = None
    if args.source != "file":
        supervisor = parts["supervisor"] = live.Supervisor(parts["source"], args,
                                                           parts.get("publisher"))
    stop_event = threading.Event()

    def on_signal(signum, _frame):
        stop_event.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    try:
        stopped = execute(tb, stop_event, supervisor, parts["chain"].abort)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    stats = write_stats(args.stats, parts, time.monotonic() - t0)
    _report_dashboard(dashboard)
    if not stopped:
        log.error("the flowgraph did not stop within %g s; exiting without it (files written "
                  "so far are kept)", STOP_TIMEOUT_S)
        os._exit(1)  # a hung scheduler thread would otherwise keep the process alive
    if not args.quiet:
        from .summary import print_summary
        print_summary(args, parts, stats)
    code = 0
    fault = supervisor and not stop_event.is_set() and parts["source"].fault
    if fault:
        seconds = stats["samples_in"] / parts["source"].samp_rate
        print(f"spectrumfm: error: {fault}; stopped after {seconds:.1f} s of signal (what was "
              f"decided and recorded until then is kept)", file=sys.stderr)
        code = EXIT_RADIO
    if getattr(parts["chain"].detector, "busy", bool)():
        # The model's thread is still inside a batch: interpreter shutdown would end it in
        # the middle of a PyTorch call, which aborts the process. Everything is written.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
