"""Channel windows for the occupancy (sensing) adapter, cut exactly as the engine cuts them.

The engine decides occupancy per channel and time slot from windows of the channeliser's
output (:class:`spectrumfm.infer.channelizer.Channelizer`). The sensing adapter is trained on
windows made the same way: random wideband scenes (:func:`spectrumfm.synth.scenes.render`)
are split into ``n_channels`` channels and cut into ``window_len``-sample windows, and each
(channel, window) cell is labelled from what each emitter puts into it (its own rendered
samples, channelised and averaged over the cell: the cell's SNR from that emitter):

* **occupied**: some emitter's SNR in the cell is at least half (-3 dB) its in-band SNR:
  the channel lies inside the emitter's band while it transmits, so "an emitter at 0 dB"
  means about 0 dB in the channel too;
* **vacant**: every emitter's SNR in the cell is below -20 dB (1 % of the noise; sidelobes
  and filter skirts included);
* anything between (a channel an emitter only grazes, a narrow emitter filling a small part
  of a wide channel, a chirp passing through for part of the cell) is left out: a channel
  detector cannot be asked to find it at the emitter's in-band SNR, nor blamed for seeing it.

Labels by received power, not by the annotated box, because boxes overstate occupancy: the
edge quarter of an RRC-shaped emitter, a LoRa chirp's sweep or a pulsed ADS-B reply fill
their box only in part.

Emitters transmit steadily (no bursts). Each window is a channel alone (``oversample`` 1,
the default: what the shipped level-aware adapters read) or seen with half of each neighbour
(``oversample`` 2, see :class:`~spectrumfm.infer.channelizer.Channelizer`: a reference for
per-window min-max features, which carry no level; with level features it made vacant
channels beside strong emitters look occupied), and is **scaled to unit noise variance per
channel sample** (the
engine scales its windows by the stream's noise floor, see
:class:`spectrumfm.infer.band.BandAnalyzer`), with the floor misjudged by a random
``floor_error_db`` (normal, standard deviation 0.5 dB by default, one draw per scene) as the
engine's estimate is. Each scene draws its rate from ``rates`` (an RTL-SDR's 2.4 MS/s to a
USRP's 20 MS/s), so emitters come in every width relative to a channel, as live. Vacant
cells are thinned to as many as the occupied ones. A cell's ``snr_db`` is its emitter's
in-band SNR (the strongest, when several qualify); vacant cells carry the SNR of the scene's
emitters (their mean), so that Pfa can be read per SNR as well. Written as a ``shards:``
dataset with classes ``["vacant", "occupied"]`` (occupied second, as
:data:`spectrumfm.tasks.POSITIVE` wants).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from spectrumfm.synth.dataset import DATASET_FORMAT, _prepare_dir, _sha256, _shard_name

__all__ = ["label_cells", "cell_snr", "scene_windows", "generate_occupancy",
           "OCCUPANCY_CLASSES"]

log = logging.getLogger("spectrumfm")
OCCUPANCY_CLASSES = ["vacant", "occupied"]
DEFAULT_RATES = (2.4e6, 10e6, 20e6)
VACANT, OCCUPIED, AMBIGUOUS = 0, 1, -1
# An emitter occupies a cell when its SNR there is at least this share of its in-band SNR
# (-3 dB); a cell is vacant when every emitter's SNR there is below VACANT_SNR (-20 dB).
OCCUPIED_SHARE = 0.5
VACANT_SNR = 0.01


def cell_snr(parts, n_channels: int, cell_len: int, n_cells: int) -> np.ndarray:
    """(E, C, n_cells) float64: each emitter's linear SNR in each channel's cells.

    Args:
        parts: each emitter's own samples (:func:`~spectrumfm.synth.scenes.render`'s
            ``parts``), at a level where the receiver noise has unit variance per sample.
        n_channels: channels C; a channel is its band alone (no oversampling), at ``1 / C``
            of the input rate.
        cell_len: channel samples per cell (a cell spans ``cell_len * C`` input samples).
    """
    from spectrumfm.infer.channelizer import Channelizer

    ch = Channelizer(n_channels)
    out = np.zeros((len(parts), n_channels, n_cells))
    for i, x in enumerate(parts):
        y = ch(np.asarray(x, np.complex64)).numpy()[:, :n_cells * cell_len]
        power = (np.abs(y) ** 2).reshape(n_channels, n_cells, cell_len).mean(axis=-1)
        out[i] = power / ch.noise_gain
    return out


def label_cells(snr_cells: np.ndarray, snr_db) -> tuple[np.ndarray, np.ndarray]:
    """Label every (channel, cell) of a scene from its emitters' SNR in each cell.

    Args:
        snr_cells: (E, C, n_cells) linear SNR of each emitter in each cell (:func:`cell_snr`).
        snr_db: (E,) each emitter's in-band SNR, dB.

    Returns:
        (labels (C, n_cells) int: 1 occupied, 0 vacant, -1 left out; snr (C, n_cells)
        float, the in-band SNR of the strongest emitter occupying the cell, NaN elsewhere).
    """
    snr_cells = np.asarray(snr_cells, np.float64)
    _, C, n_cells = snr_cells.shape
    labels = np.full((C, n_cells), AMBIGUOUS, np.int64)
    snr = np.full((C, n_cells), np.nan)
    if snr_cells.shape[0] == 0:
        labels[:] = VACANT
        return labels, snr
    inband = 10.0 ** (np.asarray(snr_db, np.float64) / 10.0)
    occupied = snr_cells >= OCCUPIED_SHARE * inband[:, None, None]            # (E, C, n)
    labels[(snr_cells < VACANT_SNR).all(axis=0)] = VACANT
    labels[occupied.any(axis=0)] = OCCUPIED
    snr = np.where(occupied, np.asarray(snr_db, np.float64)[:, None, None], -np.inf).max(axis=0)
    snr[~occupied.any(axis=0)] = np.nan
    return labels, snr


def scene_labels(scene, n_channels: int = 16, cell_len: int = 128):
    """(samples, labels (C, n_cells), snr (C, n_cells)) of one scene: its rendered samples
    and the label of every cell of ``cell_len * C`` input samples (:func:`label_cells`)."""
    from spectrumfm.synth.scenes import render

    parts: list = []
    iq, _ = render(scene, parts=parts)
    n_cells = len(iq) // (cell_len * n_channels)
    labels, snr = label_cells(cell_snr(parts, n_channels, cell_len, n_cells),
                              [e.snr_db for e in scene.emitters])
    return iq, labels, snr


def scene_windows(scene, n_channels: int = 16, window_len: int = 128, oversample: int = 1,
                  floor_db: float = 0.0):
    """(windows (k, window_len) complex64, labels (k,), snr (k,)) of one scene's cells that
    have a label, before thinning. A cell is one window of a channel (its view widened by
    ``oversample``, see :class:`~spectrumfm.infer.channelizer.Channelizer`: it spans
    ``window_len * C / oversample`` input samples), scaled to unit noise variance per
    channel sample as if the noise floor were ``floor_db`` (dB over the true one: a
    misjudged floor)."""
    from spectrumfm.infer.channelizer import Channelizer

    ch = Channelizer(n_channels, oversample=oversample)
    # The label of a window is that of the same input samples: window_len / oversample
    # samples of the channel proper.
    iq, labels, snr = scene_labels(scene, n_channels, window_len // oversample)
    y = ch(iq).numpy()                                            # (C, T // D)
    n_cells = min(labels.shape[1], y.shape[1] // window_len)
    labels, snr = labels[:, :n_cells], snr[:, :n_cells]
    cells = y[:, :n_cells * window_len].reshape(n_channels, n_cells, window_len)
    cells = cells / np.float32(np.sqrt(ch.noise_gain * 10.0 ** (floor_db / 10.0)))
    keep = labels != AMBIGUOUS
    scene_snr = float(np.mean([e.snr_db for e in scene.emitters])) if scene.emitters else np.nan
    snr = np.where(labels == OCCUPIED, snr, scene_snr)
    return cells[keep], labels[keep], snr[keep].astype(np.float32)


def _random_scene(rng, seed: int, rates, n_channels: int, window_len: int, cells: int,
                  snr_range, max_emitters: int):
    from spectrumfm.synth.core import get, names
    from spectrumfm.synth.scenes import random_scene

    rate = float(rates[int(rng.integers(len(rates)))])
    pool = [n for n in names("technology") if n != "noise" and get("technology", n).min_rate
            <= 0.8 * rate] + ["modulation:qpsk", "modulation:16qam", "modulation:gmsk",
                              "modulation:bpsk", "modulation:ook"]
    duration = cells * window_len * n_channels / rate
    scene = random_scene(rng, rate, 0.0, duration, pool, int(rng.integers(1, max_emitters + 1)),
                         snr_range=snr_range, seed=seed)
    for e in scene.emitters:
        e.burst = False       # annotations then span exactly where the emitter is on
    return scene


def generate_occupancy(out_dir: str, *, n_scenes: int, seed: int = 0, n_channels: int = 16,
                       window_len: int = 128, cells: int = 24, snr_range=(-15.0, 10.0),
                       rates=DEFAULT_RATES, max_emitters: int = 4, shard_size: int = 20000,
                       oversample: int = 1, floor_error_db: float = 0.5,
                       overwrite: bool = False, progress: bool = True) -> dict:
    """Write the channel-window dataset of ``n_scenes`` random scenes; returns dataset.json."""
    import h5py
    from tqdm import tqdm

    _prepare_dir(out_dir, overwrite)
    rng = np.random.default_rng([seed, 4242])
    windows, labels, snrs, scene_ids = [], [], [], []
    for i in tqdm(range(n_scenes), desc="scenes", disable=not progress, leave=False):
        scene = _random_scene(rng, seed * 1_000_003 + i, rates, n_channels, window_len, cells,
                              snr_range, max_emitters)
        w, lab, snr = scene_windows(scene, n_channels, window_len, oversample,
                                    floor_db=float(rng.normal(0.0, floor_error_db)))
        occupied = np.flatnonzero(lab == OCCUPIED)
        vacant = np.flatnonzero(lab == VACANT)
        vacant = rng.choice(vacant, min(len(vacant), max(len(occupied), 2)), replace=False)
        pick = np.sort(np.concatenate([occupied, vacant]))
        windows.append(w[pick])
        labels.append(lab[pick])
        snrs.append(snr[pick])
        scene_ids.append(np.full(len(pick), i, np.int64))
    iq = np.concatenate(windows).astype(np.complex64)
    label = np.concatenate(labels)
    snr = np.concatenate(snrs)
    scene_id = np.concatenate(scene_ids)
    shards = []
    for k, lo in enumerate(range(0, len(iq), shard_size)):
        name = _shard_name(k)
        tmp = os.path.join(out_dir, f".{name}.tmp")
        sl = slice(lo, lo + shard_size)
        with h5py.File(tmp, "w") as f:
            f.attrs["classes"] = json.dumps(OCCUPANCY_CLASSES)
            f.attrs["samp_rate"] = 1.0   # channel windows of scenes at several rates
            f.attrs["format"] = DATASET_FORMAT
            for key, col in (("iq", iq[sl]), ("label", label[sl]), ("snr_db", snr[sl]),
                             ("scene", scene_id[sl])):
                f.create_dataset(key, data=col, track_times=False)
        os.replace(tmp, os.path.join(out_dir, name))
        shards.append({"file": name, "n": int(len(iq[sl])),
                       "sha256": _sha256(os.path.join(out_dir, name))})
    info = {"format": DATASET_FORMAT, "format_version": 1, "family": "occupancy",
            "classes": OCCUPANCY_CLASSES, "samp_rate": None, "length": window_len,
            "n_examples": int(len(iq)), "n_occupied": int((label == OCCUPIED).sum()),
            "recipe": {"n_scenes": n_scenes, "seed": seed, "n_channels": n_channels,
                       "window_len": window_len, "cells": cells, "snr_range": list(snr_range),
                       "rates": list(rates), "max_emitters": max_emitters,
                       "oversample": oversample, "floor_error_db": floor_error_db,
                       "labels": "by received power (occupied >= -3 dB of the emitter's "
                                 "in-band SNR, vacant < -20 dB)"},
            "level": "unit noise variance per channel sample (floor misjudged by "
                     f"N(0, {floor_error_db} dB) per scene)",
            "shards": shards}
    with open(os.path.join(out_dir, ".dataset.json.tmp"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(out_dir, ".dataset.json.tmp"), os.path.join(out_dir, "dataset.json"))
    return info


# -- anomaly windows ---------------------------------------------------------------------
ANOMALY_WINDOW_CLASSES = ["normal", "anomalous"]
JAMMERS = ("cw", "chirp", "pulsed")


def _jammer(rng, kind: str, fs: float, n: int):
    """(samples, (f_lo, f_hi) Hz from the centre, active (n,) bool) of one jammer, at unit
    power; the caller scales it."""
    t = np.arange(n) / fs
    active = np.ones(n, bool)
    if kind == "cw":
        f = float(rng.uniform(-0.45, 0.45) * fs)
        x = np.exp(2j * np.pi * f * t)
        band = (f - fs / 1000, f + fs / 1000)
    elif kind == "chirp":
        width = float(rng.uniform(1 / 16, 1 / 4) * fs)
        f0 = float(rng.uniform(-0.45 * fs, 0.45 * fs - width))
        period = n / float(rng.integers(2, 8)) / fs
        phase_t = np.mod(t, period)
        x = np.exp(2j * np.pi * (f0 * t + 0.5 * width / period * phase_t ** 2))
        band = (f0, f0 + width)
    elif kind == "pulsed":
        period = int(n / rng.integers(2, 6))
        duty = float(rng.uniform(0.2, 0.5))
        active = (np.arange(n) % period) < duty * period
        x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2) * active
        band = (-fs / 2, fs / 2)
    else:
        raise ValueError(f"unknown jammer {kind!r}; jammers: {', '.join(JAMMERS)}")
    return x.astype(np.complex64), band, active


def anomaly_scene_windows(scene, rng, *, n_channels: int = 16, window_len: int = 128,
                          jammer: str | None = None, jnr_db: float = 0.0, oversample: int = 1):
    """Channel windows of one scene, with a jammer added when ``jammer`` is given.

    Every cell is normal, except those whose window's view (the channel, widened by half a
    channel per side when ``oversample`` is 2) the jammer's band touches while it is on (at
    least a quarter of the cell): anomalous. ``jnr_db`` is the jammer's power over the
    receiver noise of the whole band. Windows are scaled to unit noise variance per channel
    sample. Returns (windows, labels 0 normal / 1 anomalous, snr):
    ``snr`` the cell's jammer-to-noise ratio in dB, NaN for normal cells.
    """
    from spectrumfm.infer.channelizer import Channelizer
    from spectrumfm.synth.scenes import render

    iq, _ = render(scene)
    fs = scene.samp_rate
    ch = Channelizer(n_channels, oversample=oversample)
    C, span = n_channels, window_len * ch.decimation
    n_cells = len(iq) // span
    labels = np.zeros((C, n_cells), np.int64)
    if jammer:
        x, (lo, hi), active = _jammer(rng, jammer, fs, len(iq))
        iq = iq + x * np.float32(10 ** (jnr_db / 20))
        # What a window sees: its channel widened by half a channel per side when oversampled.
        edges = ch.channel_edges(fs, 0.0)
        widen = (oversample - 1) / 2 * (edges[0, 1] - edges[0, 0])
        touch = (np.minimum(edges[:, 1] + widen, hi) - np.maximum(edges[:, 0] - widen, lo)) > 0
        on = active[:n_cells * span].reshape(n_cells, span).mean(axis=1) >= 0.25
        labels[touch[:, None] & on[None, :]] = 1
    # Unit noise variance per channel sample, as the engine scales its grid windows.
    y = ch(iq).numpy() / np.float32(np.sqrt(ch.noise_gain))
    cells = y[:, :n_cells * window_len].reshape(C, n_cells, window_len)
    snr = np.where(labels == 1, jnr_db, np.nan).astype(np.float32)
    return cells.reshape(-1, window_len), labels.ravel(), snr.ravel()


def generate_anomaly_windows(out_dir: str, *, n_scenes: int, seed: int = 0,
                             n_channels: int = 16, window_len: int = 128, cells: int = 16,
                             jnr_range=(-10.0, 10.0), rates=DEFAULT_RATES, oversample: int = 1,
                             overwrite: bool = False, progress: bool = True) -> dict:
    """Channel windows of normal scenes (as :func:`generate_occupancy` makes them) and of the
    same kind of scenes with a CW, chirp or pulsed jammer in half of them. Classes
    ``["normal", "anomalous"]``: the anomaly adapter learns the normal windows, and its
    validation and test splits measure how the jammed cells stand out."""
    import h5py
    from tqdm import tqdm

    _prepare_dir(out_dir, overwrite)
    rng = np.random.default_rng([seed, 5151])
    parts = []
    for i in tqdm(range(n_scenes), desc="scenes", disable=not progress, leave=False):
        scene = _random_scene(rng, seed * 1_000_003 + i, rates, n_channels, window_len, cells,
                              (-10.0, 20.0), 4)
        jammer = JAMMERS[int(rng.integers(len(JAMMERS)))] if rng.random() < 0.5 else None
        w, lab, snr = anomaly_scene_windows(scene, rng, n_channels=n_channels,
                                            window_len=window_len, jammer=jammer,
                                            jnr_db=float(rng.uniform(*jnr_range)),
                                            oversample=oversample)
        parts.append((w, lab, snr))
    iq = np.concatenate([p[0] for p in parts]).astype(np.complex64)
    label = np.concatenate([p[1] for p in parts])
    snr = np.concatenate([p[2] for p in parts])
    name = _shard_name(0)
    tmp = os.path.join(out_dir, f".{name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["classes"] = json.dumps(ANOMALY_WINDOW_CLASSES)
        f.attrs["samp_rate"] = 1.0   # channel windows of scenes at several rates
        f.attrs["format"] = DATASET_FORMAT
        for key, col in (("iq", iq), ("label", label), ("snr_db", snr)):
            f.create_dataset(key, data=col, track_times=False)
    os.replace(tmp, os.path.join(out_dir, name))
    info = {"format": DATASET_FORMAT, "format_version": 1, "family": "anomaly-windows",
            "classes": ANOMALY_WINDOW_CLASSES, "samp_rate": None, "length": window_len,
            "n_examples": int(len(iq)), "n_anomalous": int(label.sum()),
            "recipe": {"n_scenes": n_scenes, "seed": seed, "n_channels": n_channels,
                       "window_len": window_len, "cells": cells, "jnr_range": list(jnr_range),
                       "rates": list(rates), "jammers": list(JAMMERS),
                       "oversample": oversample},
            "shards": [{"file": name, "n": int(len(iq)),
                        "sha256": _sha256(os.path.join(out_dir, name))}]}
    with open(os.path.join(out_dir, "dataset.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info
