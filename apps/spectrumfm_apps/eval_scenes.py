"""`spectrumfm evaluate --scenes N`: occupancy on generated two-emitter scenes, the model
against the classical energy detector on the same time-frequency cells (issue 6's bar).

Each scene (seeded, so reruns match) holds two steady emitters at the SNR under test, drawn
from technologies and modulations of many widths, at a rate of 2.4, 10 or 20 MS/s. The band
analysis runs with cells of ``128 x channels`` samples and as many model windows per cell as
cover it (one, or two with the sensing adapter's twice-wide channel view), so the model and
the energy detector decide on the same samples: the model from the channel's windows, the
detector from the same cell of its own grid. Cells are labelled by the power each emitter
puts into them, as the sensing adapter's training windows are
(:func:`spectrumfm.synth.occupancy.label_cells`): occupied where an emitter's SNR in the
cell is within 3 dB of its in-band SNR, vacant where every emitter is 20 dB below the noise;
cells between (an emitter's skirt, a narrow emitter in a wide channel) are left out, and
counted in the output.

For each SNR: Pd at Pfa 0.1 (the ROC point, threshold set on that SNR's vacant cells) of
the model alone, of the energy detector alone and of the fused score the engine publishes,
and the published decisions' own Pd / Pfa (label "occupied"); the gains of the model and of
the fused score over the detector come with 95 % intervals from resampling whole scenes.

``--calibrate`` first fits the fusion (logistic regression of occupied on the model's logit
and the detector's z statistic, on calibration scenes with other seeds and SNRs from -15 to 10 dB)
and writes it into the sensing adapter's ``adapter_config.json``.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from spectrumfm.errors import InputError

POOL = ("lte", "ble", "zigbee", "gsm", "lora", "fm", "adsb", "modulation:qpsk",
        "modulation:16qam", "modulation:gmsk", "modulation:bpsk", "wifi", "nr", "dvbt")
RATES = (2.4e6, 10e6, 20e6)
CELLS = 32            # cells per channel per scene
PFA = 0.1
BOOTSTRAP = 1000      # scene resamples for the intervals of the gains over the detector


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def two_emitter_scene(seed: int, snr_db: float, n_channels: int):
    """A seeded scene with two steady emitters at ``snr_db`` that fit its rate."""
    from spectrumfm.synth.core import get
    from spectrumfm.synth.recipe import resolve_waveform
    from spectrumfm.synth.scenes import random_scene

    rng = np.random.default_rng([seed, 77])
    rate = float(RATES[int(rng.integers(len(RATES)))])
    pool = [n for n in POOL if resolve_waveform(n).family != "technology"
            or get("technology", n).min_rate <= 0.8 * rate]
    duration = CELLS * 128 * n_channels / rate
    for _ in range(20):
        scene = random_scene(rng, rate, 0.0, duration, pool, 2, snr_range=(snr_db, snr_db),
                             seed=seed)
        if len(scene.emitters) == 2:
            break
    for e in scene.emitters:
        e.burst, e.start_s, e.duration_s = False, 0.0, None
    return scene


def score_scene(scene, bundle, n_channels: int, fusion_off: bool = False):
    """(model P(occupied), detector z, published score, label) per cell; label -1 (AMBIGUOUS)
    for the cells left out of the scoring."""
    import torch

    from spectrumfm.infer.band import BandAnalyzer
    from spectrumfm.infer.channelizer import Channelizer
    from spectrumfm.synth.occupancy import scene_labels

    iq, labels, _ = scene_labels(scene, n_channels, 128)
    runner = bundle.runner("occupancy")
    fusion = runner.fusion
    if fusion_off:
        runner.fusion = None
    span = 128 * n_channels
    try:
        # The model's windows cover the cell exactly: one window of a channel spans
        # 128 x C / oversample input samples.
        oversample = int((runner.input or {}).get("oversample") or 1)
        band = BandAnalyzer({"occupancy": runner}, scene.samp_rate, 0.0, n_channels=n_channels,
                            slot_s=span / scene.samp_rate, windows_per_cell=oversample,
                            device=bundle.device)
        jobs = band.process(iq, 0) + band.flush()
        decisions = []
        for job in jobs:
            with torch.inference_mode():
                probs = runner(torch.from_numpy(job.windows).to(bundle.device)).float().cpu()
            decisions += band.decide(job, probs.numpy())
    finally:
        runner.fusion = fusion
    edges = Channelizer(n_channels).channel_edges(scene.samp_rate, 0.0)
    n_cells = labels.shape[1]
    rows = []
    for d in decisions:
        if d["task"] != "occupancy":
            continue
        k = int(np.argmin(np.abs(edges[:, 0] - d["freq_lo"])))
        c = d["sample_start"] // span
        if c >= n_cells:
            continue
        # score is P(occupied) whatever the label (DESIGN.md); energy_z ranks as the
        # detector's statistic does (a monotone map of it), so its ROC is the detector's.
        rows.append((d["model_score"], d["energy_z"], d["score"], labels[k, c]))
    rows = np.array(rows, np.float64).reshape(-1, 4)
    # A cell without an energy statistic (the detector's floor not yet known) is left out.
    return rows[np.isfinite(rows).all(axis=1)]


def fit_fusion(rows: np.ndarray) -> dict:
    """Logistic regression of the label on [logit(model), energy z] (Newton, small ridge):
    the weights of :func:`spectrumfm.infer.band.fuse`."""
    rows = rows[np.isfinite(rows).all(axis=1) & (rows[:, 3] >= 0)]
    X = np.stack([_logit(rows[:, 0]), rows[:, 1], np.ones(len(rows))], axis=1)
    y = rows[:, 3]
    w = np.zeros(3)
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -50, 50)))
        grad = X.T @ (p - y) + 1e-3 * np.r_[w[:2], 0]
        hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-3 * np.diag([1, 1, 0]) + 1e-9 * np.eye(3)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return {"w_model": float(w[0]), "w_energy": float(w[1]), "bias": float(w[2]),
            "inputs": "logit of the model's P(occupied); the energy detector's z (band.energy_z)"}


def bootstrap_gains(scenes: list, n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Pd gains over the energy detector (model, fused) with 95 % intervals from resampling
    whole scenes (cells of one scene are not independent: their emitters are shared).

    Returns ``gain_model`` and ``gain_fused`` (Pd at Pfa 0.1 minus the detector's, on all the
    cells) and ``gain_model_ci`` / ``gain_fused_ci``: the 2.5 and 97.5 percentiles over
    ``n_boot`` resamples of the scenes with replacement (seeded).
    """
    rows = np.concatenate(scenes)
    out = {"gain_model": _pd(rows, 0) - _pd(rows, 1), "gain_fused": _pd(rows, 2) - _pd(rows, 1)}
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(n_boot):
        pick = np.concatenate([scenes[i] for i in rng.integers(len(scenes), size=len(scenes))])
        if (pick[:, 3] == 1).all() or (pick[:, 3] == 0).all():
            continue
        e = _pd(pick, 1)
        gains.append((_pd(pick, 0) - e, _pd(pick, 2) - e))
    gains = np.array(gains).reshape(-1, 2)
    for k, name in enumerate(("model", "fused")):
        lo, hi = (np.percentile(gains[:, k], [2.5, 97.5]) if len(gains)
                  else (math.nan, math.nan))
        out[f"gain_{name}_ci"] = [float(lo), float(hi)]
    return out


def _interval(r: dict, name: str) -> str:
    lo, hi = r[f"gain_{name}_ci"]
    return f"{r[f'gain_{name}']:+.3f} (95 % over scenes {lo:+.3f}..{hi:+.3f})"


def _pd(rows, column: int, pfa: float = PFA) -> float:
    from spectrumfm import metrics
    return metrics.pd_at_pfa(rows[:, 3] == 1, rows[:, column], pfa)


def main(args) -> int:
    from spectrumfm.infer.bundle import load_bundle

    try:
        snrs = [float(s) for s in str(args.snr).split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--snr {args.snr}: expected comma-separated dB values") from None
    if args.scenes < 1 or not snrs:
        raise InputError("--scenes must be at least 1 and --snr name at least one SNR")
    bundle = load_bundle(args.model, ["occupancy"], args.device)
    C = args.channels
    if args.calibrate:
        from spectrumfm.train.lora import ADAPTER_CONFIG_FILE

        cal = np.concatenate([score_scene(two_emitter_scene(10_000 + i, float(s), C), bundle, C,
                                          fusion_off=True)
                              for i, s in enumerate(np.tile(np.arange(-15, 11, 5),
                                                            max(1, args.scenes // 2)))])
        fusion = fit_fusion(cal)
        fusion["calibration"] = (f"{len(cal)} cells of {6 * max(1, args.scenes // 2)} "
                                 "two-emitter scenes, SNR -15..10 dB, seeds 10000+")
        runner = bundle.runner("occupancy")
        path = bundle.path / "adapters" / runner.adapter_task / ADAPTER_CONFIG_FILE
        config = json.loads(path.read_text())
        config["fusion"] = fusion
        path.write_text(json.dumps(config, indent=2) + "\n")
        runner.fusion = fusion
        print(f"fusion written to {path}: {fusion}", file=sys.stderr)
    results = {"model": bundle.name, "channels": C, "scenes_per_snr": args.scenes, "pfa": PFA,
               "per_snr": {}}
    for snr in snrs:
        scenes = [score_scene(two_emitter_scene(i, snr, C), bundle, C)
                  for i in range(args.scenes)]
        rows = np.concatenate(scenes)
        left_out = int((rows[:, 3] < 0).sum())
        scenes = [x[x[:, 3] >= 0] for x in scenes]
        rows = rows[rows[:, 3] >= 0]
        occ = rows[:, 3] == 1
        r = {"cells": int(len(rows)), "occupied": int(occ.sum()), "left_out": left_out,
             "pd_model": _pd(rows, 0), "pd_energy": _pd(rows, 1), "pd_fused": _pd(rows, 2),
             "published_pd": float((rows[occ, 2] > 0.5).mean()) if occ.any() else math.nan,
             "published_pfa": float((rows[~occ, 2] > 0.5).mean()) if (~occ).any() else math.nan,
             **bootstrap_gains(scenes)}
        results["per_snr"][f"{snr:g}"] = r
        print(f"SNR {snr:+5.1f} dB: {r['cells']} cells ({r['occupied']} occupied, {left_out} "
              f"left out); Pd at Pfa "
              f"{PFA}: model {r['pd_model']:.3f}, energy detector {r['pd_energy']:.3f}, "
              f"fused {r['pd_fused']:.3f}; published decisions Pd {r['published_pd']:.3f} "
              f"Pfa {r['published_pfa']:.3f}; model - detector {_interval(r, 'model')}, "
              f"fused - detector {_interval(r, 'fused')}")
    if args.json:
        print(json.dumps(results))
    return 0
