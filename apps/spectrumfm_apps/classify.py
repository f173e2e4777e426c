"""`spectrumfm classify`: what is in a recording, without GNU Radio.

    spectrumfm classify capture.sigmf-meta --task technology --json
    spectrumfm classify capture.cu8 --samp-rate 2.4e6 --freq 433.92e6 --task modulation

Reads the recording (``spectrumfm.recording``: SigMF, raw cf32/ci16/cs8/cu8 with
``--samp-rate``, WAV), runs the band analysis (``spectrumfm.infer.band``) and the model
synchronously: for technology and modulation every emission the energy detector finds is cut
out, resampled to the rate its adapter was trained at and classified; for occupancy and
anomaly every channel of every slot is. Prints a short summary; with ``--json`` the last line
is one JSON object::

    {"path", "task", "label", "score", "samp_rate", "center_freq", "duration_s", "model",
     "emissions": [{"freq_lo", "freq_hi", "sample_start", "sample_count", "label", "score",
                    "time", "duration_s", ...}]}

The overall label is the one with the largest sum of score x duration x bandwidth over its
emissions (for occupancy and anomaly an "emission" is a run of occupied / anomalous slots of
one channel); with none it is "noise" (technology, modulation), "vacant" or "normal".
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

from spectrumfm.errors import InputError

DESCRIPTION = "Classify what a recording holds (technology, modulation, occupancy, anomaly)."
TASKS = ("technology", "modulation", "occupancy", "anomaly")
DEFAULT_MODEL = "spectrumfm-tiny"
_NOTHING = {"technology": "noise", "modulation": "noise", "occupancy": "vacant",
            "anomaly": "normal"}
_POSITIVE = {"occupancy": "occupied", "anomaly": "anomalous"}
_CHUNK = 1 << 20          # samples read at a time
_BATCH = 256              # windows per model call

log = logging.getLogger("spectrumfm")


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="spectrumfm classify", description=DESCRIPTION)
    p.add_argument("path", metavar="PATH", help="recording: SigMF, raw IQ or WAV")
    p.add_argument("--format", metavar="F",
                   help="cf32, ci16, cs16, cs8, ci8, cu8 (raw files), sigmf or wav")
    p.add_argument("-s", "--samp-rate", type=float, metavar="HZ",
                   help="sample rate (raw files need it; overrides the file's)")
    p.add_argument("-f", "--freq", type=float, metavar="HZ",
                   help="centre frequency (overrides the file's)")
    p.add_argument("--task", choices=TASKS, default="technology",
                   help="what to decide (default %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|DIR",
                   help="a shipped model name or a model folder (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--duration", type=float, metavar="S",
                   help="analyse only the first S seconds")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the result")
    return p


def add_parser(sub):
    p = sub.add_parser("classify", help="classify what a recording holds",
                       description=DESCRIPTION)
    get_args_parser(p)
    p.set_defaults(func=main)
    return p


def _register_shipped_models() -> None:
    from spectrumfm.infer.bundle import add_search_dir
    try:
        from ._paths import DATA_DIR
    except ImportError:       # running from the source tree: only $SPECTRUMFM_MODELS
        return
    add_search_dir(Path(DATA_DIR) / "models")


def _run_jobs(runner_for, analyzer, jobs, device) -> list[dict]:
    """Run the jobs' windows through their runners, batching the jobs of each task together
    (up to _BATCH windows a call), and decide."""
    import torch

    out = []
    for task in dict.fromkeys(j.task for j in jobs):
        group = [j for j in jobs if j.task == task]
        windows = np.concatenate([j.windows for j in group])
        probs = torch.cat([runner_for[task](torch.from_numpy(windows[i:i + _BATCH]).to(device))
                           .float().cpu() for i in range(0, len(windows), _BATCH)]).numpy()
        at = 0
        for job in group:
            out += analyzer.decide(job, probs[at:at + len(job.windows)])
            at += len(job.windows)
    return sorted(out, key=lambda d: (d["sample_start"], d["freq_lo"]))


def analyse(rec, bundle, task: str, max_samples: int | None = None) -> list[dict]:
    """Every decision of ``task`` on the recording (retuning at its SigMF captures)."""
    from spectrumfm.infer.band import BandAnalyzer

    fc = rec.center_freq or 0.0
    analyzer = BandAnalyzer(bundle.runners, rec.samp_rate, fc, window_len=bundle.window_len,
                            device=bundle.device)
    end = rec.num_samples if max_samples is None else min(rec.num_samples, max_samples)
    # Split points: every capture whose centre differs is a retune at its first sample.
    retunes = {c.sample_start: c.center_freq for c in rec.captures[1:]
               if c.center_freq is not None and 0 < c.sample_start < end}
    stops = sorted(set(range(0, end, _CHUNK)) | set(retunes) | {end})
    decisions = []
    for a, b in zip(stops[:-1], stops[1:]):
        if a in retunes:
            analyzer.retune(center_freq=retunes[a])
        jobs = analyzer.process(rec.read(a, b - a), a)
        decisions += _run_jobs(bundle.runners, analyzer, jobs, bundle.device)
    decisions += _run_jobs(bundle.runners, analyzer, analyzer.flush(), bundle.device)
    if analyzer.emissions_skipped:
        log.info("%s: %d emissions beyond %d per slot were not classified", rec.path,
                 analyzer.emissions_skipped, analyzer.max_emissions_per_slot)
    return [d for d in decisions if d["task"] == task]


def _entry(d: dict, **extra) -> dict:
    keys = ("freq_lo", "freq_hi", "sample_start", "sample_count", "label", "score", "time",
            "snr_db", "wider_than_capture", "windows", "truncated")
    e = {k: d[k] for k in keys if k in d}
    e["duration_s"] = d["sample_count"] / d["samp_rate"]
    e.update(extra)
    return e


def grid_runs(decisions: list[dict], task: str) -> list[dict]:
    """Runs of consecutive positive slots of each channel, as emission entries."""
    runs, open_runs = [], {}
    for d in sorted(decisions, key=lambda d: (d["sample_start"], d["freq_lo"])):
        key = (d["freq_lo"], d["freq_hi"])
        run = open_runs.get(key)
        if d["label"] != _POSITIVE[task]:
            open_runs.pop(key, None)
            continue
        if run is not None and run["sample_start"] + run["sample_count"] == d["sample_start"]:
            n = run["slots"]
            run["score"] = (run["score"] * n + d["score"]) / (n + 1)
            run["sample_count"] += d["sample_count"]
            run["duration_s"] = run["sample_count"] / d["samp_rate"]
            run["slots"] = n + 1
        else:
            run = _entry(d, slots=1)
            runs.append(run)
            open_runs[key] = run
    return runs


def overall(emissions: list[dict], task: str, decisions=()) -> tuple[str, float]:
    """(label, score): the label with the most score x duration x bandwidth, and the
    weighted mean score of its emissions. With none, the task's "nothing" label, scored
    1 - the highest cell probability (occupancy, anomaly) or 1 (no emission detected)."""
    if not emissions:
        cells = [d["score"] for d in decisions] if task in _POSITIVE else []
        return _NOTHING[task], 1.0 - max(cells, default=0.0)
    weight, mass = {}, {}
    for e in emissions:
        w = e["duration_s"] * max(e["freq_hi"] - e["freq_lo"], 1e-9)
        weight[e["label"]] = weight.get(e["label"], 0.0) + e["score"] * w
        mass[e["label"]] = mass.get(e["label"], 0.0) + w
    label = max(weight, key=weight.get)
    return label, weight[label] / mass[label]


def _fmt_hz(hz: float) -> str:
    for unit, scale in (("GHz", 1e9), ("MHz", 1e6), ("kHz", 1e3)):
        if abs(hz) >= scale:
            return f"{hz / scale:.4g} {unit}"
    return f"{hz:.4g} Hz"


def main(args) -> int:
    from spectrumfm.recording import open_recording

    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise InputError(f"--duration must be positive, got {args.duration:g}")
    rec = open_recording(args.path, format=args.format, samp_rate=args.samp_rate,
                         center_freq=args.freq)
    with rec:
        from spectrumfm.infer.bundle import load_bundle    # torch: after the cheap checks

        _register_shipped_models()
        try:
            bundle = load_bundle(args.model, [args.task], args.device)
        except InputError as e:      # the engine names its option --tasks; this one is --task
            raise InputError(str(e).replace("--tasks ", "--task ", 1)) from None
        runner = bundle.runner(args.task)
        limit = None if args.duration is None else int(round(args.duration * rec.samp_rate))
        decisions = analyse(rec, bundle, args.task, limit)
        n = rec.num_samples if limit is None else min(limit, rec.num_samples)
        if args.task in _POSITIVE:
            emissions = grid_runs(decisions, args.task)
        else:
            emissions = [_entry(d) for d in decisions]
        label, score = overall(emissions, args.task, decisions)
        fc = rec.center_freq
        result = {"path": str(args.path), "task": args.task, "label": label,
                  "score": float(score), "samp_rate": rec.samp_rate,
                  "center_freq": 0.0 if fc is None else fc, "duration_s": n / rec.samp_rate,
                  "model": runner.name, "device": str(bundle.device),
                  "datatype": rec.datatype, "emissions": emissions}
        print(f"{args.path}: {rec.samp_rate / 1e6:g} MS/s, "
              + (f"centre {_fmt_hz(fc)}" if fc is not None else "centre unknown (offsets)")
              + f", {n / rec.samp_rate:.3f} s ({rec.datatype})")
        print(f"model {runner.name} on {bundle.device}: {len(emissions)} "
              + ("emission(s)" if args.task not in _POSITIVE else f"{_POSITIVE[args.task]} run(s)"))
        for e in emissions[:20]:
            mid = (e["freq_lo"] + e["freq_hi"]) / 2 - (fc or 0.0)
            snr = e.get("snr_db")
            print(f"  {e['time']:8.3f} s  {e['duration_s'] * 1e3:8.1f} ms  "
                  f"{_fmt_hz(mid):>12} {_fmt_hz(e['freq_hi'] - e['freq_lo']):>12} wide  "
                  f"{e['label']} {e['score']:.2f}" + (f"  SNR {snr:.0f} dB" if snr is not None
                                                       else ""))
        if len(emissions) > 20:
            print(f"  ... and {len(emissions) - 20} more")
        print(f"overall: {label} ({score:.2f})")
        if args.json:
            print(json.dumps(_json_safe(result), separators=(",", ":"), allow_nan=False))
    return 0


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
