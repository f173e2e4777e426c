"""Datasets addressed by one spec string, as every training and evaluation command takes them.

    ds = open_dataset("rml2018:GOLD_XYZ_OSC.0001_1024.hdf5", window_len=128)
    train, val, test = split_indices(ds.labels, ds.snr_db, seed=0, groups=ds.frame_index)

Kinds: ``rml2016:PATH`` (RadioML 2016.10a pickle), ``rml2018:PATH`` (RadioML 2018.01A HDF5),
``shards:DIR`` (the generator's HDF5 shards), ``sigmf:PATH`` (a SigMF recording, archive or
folder of them, labelled by its annotations). Any problem with the input raises
:class:`~spectrumfm.errors.InputError` with one line naming the spec and the problem.
"""

from __future__ import annotations

import os

import numpy as np

from spectrumfm.data.dataset import ConcatWindows, IQDataset, NoiseWindows
from spectrumfm.data.radioml import read_rml2016, read_rml2018
from spectrumfm.data.shards import read_shards
from spectrumfm.data.sigmf_windows import read_sigmf
from spectrumfm.errors import InputError

__all__ = ["open_dataset", "KINDS", "TASKS", "SENSING_CLASSES", "ANOMALY_CLASSES",
           "SNR_MOBILITY_CLASSES", "snr_mobility_labels"]

KINDS = ("rml2016", "rml2018", "shards", "sigmf")
#: ``task=`` values; the first two keep the dataset's own classes.
TASKS = ("modulation", "technology", "sensing", "anomaly", "snr-mobility")
#: Label order of the binary tasks: the positive class (what is detected) is 1.
SENSING_CLASSES = ["vacant", "occupied"]
ANOMALY_CLASSES = ["normal", "anomalous"]

# The snr-mobility task (LWM-Spectro paper §V-B): one class per (SNR bin, mobility regime).
# The paper does not list its bin edges; 5 and 15 dB cut the recipes' -5..25 dB into three
# 10 dB bins: low (< 5), mid (5 to < 15) and high (>= 15).
SNR_BIN_EDGES_DB = (5.0, 15.0)
SNR_BINS = ("low", "mid", "high")
# Mobility: walking speeds (3GPP's pedestrian 3 km/h) up to 10 km/h; vehicular from 30 km/h,
# where 3GPP's vehicular scenarios start (and the paper's Fig. 2 vehicular example). Speeds
# in between belong to neither regime and are left out rather than forced into one.
PEDESTRIAN_MAX_KMH = 10.0
VEHICULAR_MIN_KMH = 30.0
MOBILITY = ("pedestrian", "vehicular")
#: Class order of the snr-mobility task: SNR bin major, mobility minor.
SNR_MOBILITY_CLASSES = [f"{b}-{m}" for b in SNR_BINS for m in MOBILITY]
_MOBILITY_HINT = "generate with multipath on, e.g. recipes/lwm-snr-mobility.yaml"
# Class names that mean "nothing transmitting" and "no anomaly" in a source dataset.
_VACANT_NAMES = {"noise", "vacant", "empty", "unoccupied"}
_NORMAL_NAMES = {"normal", "clean", "nominal", "benign"}


def open_dataset(spec: str, *, window_len: int = 128, task: str | None = None,
                 whole_frames: bool = False, seed: int = 0) -> IQDataset:
    """Open a dataset as labelled windows of ``window_len`` complex samples.

    Args:
        spec: ``KIND:PATH`` with KIND one of :data:`KINDS`.
        window_len: samples per window (the paper's N = 128). Fixed-length frames (RadioML,
            shards) are cut into ``frame_len // window_len`` windows and must divide evenly.
        task: None, ``"modulation"`` or ``"technology"`` keep the dataset's classes.
            ``"sensing"`` relabels to :data:`SENSING_CLASSES` (a class named noise is
            vacant); a dataset without one gets as many pure-noise windows added, as the
            paper augments RadioML 2018 with pure noise for unoccupied spectrum.
            ``"anomaly"`` relabels to :data:`ANOMALY_CLASSES` (a class named normal, clean,
            nominal or benign is normal, every other one anomalous). ``"snr-mobility"``
            relabels to :data:`SNR_MOBILITY_CLASSES` by the SNR and the ``speed_kmh``
            parameter (see :func:`snr_mobility_labels`) and leaves out the examples of
            neither regime; the result's ``left_out`` counts them.
        whole_frames: return whole frames (RadioML's 128 or 1024 samples, a shard's L)
            instead of windows, for whole-frame evaluation; ``window_len`` is then unused.
        seed: seeds the added noise windows of the sensing task.
    """
    spec = os.fspath(spec) if not isinstance(spec, str) else spec
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        problem = f"unknown dataset kind {kind!r}" if sep else "no dataset kind"
        raise InputError(f"{spec}: {problem}: write rml2016:PATH, rml2018:PATH, shards:DIR "
                         "or sigmf:PATH")
    if task is not None and task not in TASKS:
        raise InputError(f"{spec}: unknown task {task!r} (one of {', '.join(TASKS)})")
    if isinstance(window_len, bool) or not isinstance(window_len, (int, np.integer)) \
            or window_len < 1:
        raise InputError(f"{spec}: window length must be a whole number >= 1, got "
                         f"{window_len!r}")
    path = os.path.expanduser(path.strip())
    if not path:
        raise InputError(f"{spec}: no path after {kind}:")
    if not os.path.exists(path) and not (kind == "sigmf" and any(
            os.path.isfile(path + s) for s in (".sigmf-meta", ".sigmf"))):
        raise InputError(f"{spec}: no such file or directory")
    if kind == "rml2016":
        ds = read_rml2016(spec, path, window_len=int(window_len), whole_frames=whole_frames)
    elif kind == "rml2018":
        ds = read_rml2018(spec, path, window_len=int(window_len), whole_frames=whole_frames)
    elif kind == "shards":
        ds = read_shards(spec, path, window_len=int(window_len), whole_frames=whole_frames)
    else:
        if whole_frames:
            raise InputError(f"{spec}: whole frames need fixed-length frames; SigMF "
                             "annotations vary in length")
        ds = read_sigmf(spec, path, window_len=int(window_len))
    return _for_task(ds, task, seed)


def _relabel(ds: IQDataset, positive: np.ndarray, classes: list[str]) -> IQDataset:
    return ds.replace(labels=positive[ds.labels].astype(np.int64), classes=classes)


def snr_mobility_labels(snr_db, speed_kmh) -> np.ndarray:
    """Labels into :data:`SNR_MOBILITY_CLASSES` of examples at ``snr_db`` (dB) whose receiver
    moves at ``speed_kmh`` (km/h); -1 for an example of neither mobility regime (between
    :data:`PEDESTRIAN_MAX_KMH` and :data:`VEHICULAR_MIN_KMH`) or without an SNR or a speed
    (NaN)."""
    snr = np.asarray(snr_db, dtype=np.float64)
    speed = np.asarray(speed_kmh, dtype=np.float64)
    snr_bin = np.digitize(snr, SNR_BIN_EDGES_DB)          # low < 5 <= mid < 15 <= high
    mobility = np.where(speed <= PEDESTRIAN_MAX_KMH, 0,
                        np.where(speed >= VEHICULAR_MIN_KMH, 1, -1))   # NaN: -1
    labels = snr_bin * len(MOBILITY) + mobility
    return np.where((mobility >= 0) & np.isfinite(snr), labels, -1).astype(np.int64)


def _snr_mobility(ds: IQDataset) -> IQDataset:
    """``ds`` relabelled to :data:`SNR_MOBILITY_CLASSES`, the examples of no class left out."""
    if "speed_kmh" not in ds.params:
        raise InputError(f"{ds.source}: no speed_kmh column for the snr-mobility task; "
                         f"{_MOBILITY_HINT}")
    labels = snr_mobility_labels(ds.snr_db, ds.params["speed_kmh"])
    keep = np.flatnonzero(labels >= 0)
    if len(keep) == 0:
        raise InputError(f"{ds.source}: no example has an SNR and a pedestrian (<= "
                         f"{PEDESTRIAN_MAX_KMH:g} km/h) or vehicular (>= "
                         f"{VEHICULAR_MIN_KMH:g} km/h) speed for the snr-mobility task; "
                         f"{_MOBILITY_HINT}")
    out = ds.replace(labels=labels, classes=SNR_MOBILITY_CLASSES)
    if len(keep) == len(ds):
        return out
    rows = keep if ds.source_rows is None else ds.source_rows[keep]
    return out.subset(keep).replace(source_rows=rows,
                                    left_out=ds.left_out + len(ds) - len(keep))


def _for_task(ds: IQDataset, task: str | None, seed: int) -> IQDataset:
    names = [c.strip().lower() for c in ds.classes]
    if task == "sensing":
        vacant = np.array([c in _VACANT_NAMES for c in names])
        if vacant.any():
            return _relabel(ds, ~vacant, SENSING_CLASSES)
        n = len(ds)
        # Noise comes in frames of as many windows as the data's, so that whole-frame
        # voting sees noise frames shaped like signal frames.
        per = max(1, n // max(1, len(np.unique(ds.frame_index))))
        first = int(ds.frame_index.max()) + 1 if n else 0
        return IQDataset(
            ConcatWindows([ds.iq, NoiseWindows(n, ds.window_len, seed)]),
            np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)]),
            np.concatenate([ds.snr_db, np.full(n, np.nan, np.float32)]), SENSING_CLASSES,
            samp_rate=ds.samp_rate, source=ds.source,
            frame_index=np.concatenate([ds.frame_index, first + np.arange(n) // per]),
            params={k: np.concatenate([v, np.full(n, np.nan, np.float32)])
                    for k, v in ds.params.items()})
    if task == "anomaly":
        normal = np.array([c in _NORMAL_NAMES for c in names])
        if not normal.any():
            raise InputError(f"{ds.source}: no normal class for the anomaly task (name one "
                             f"{', '.join(sorted(_NORMAL_NAMES))}); classes are {ds.classes}")
        return _relabel(ds, ~normal, ANOMALY_CLASSES)
    if task == "snr-mobility":
        return _snr_mobility(ds)
    return ds
