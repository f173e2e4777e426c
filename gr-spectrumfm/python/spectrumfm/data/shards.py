"""The generator's datasets (``spectrumfm generate``): a folder of HDF5 shards.

Each ``DIR/*.h5`` holds ``iq`` (n, L) complex64, ``label`` (n,) int64, ``snr_db`` (n,) float32
and attributes ``classes`` (a JSON list of ids in label order) and ``samp_rate``;
``DIR/dataset.json`` describes the whole set. Labels and SNRs are read at once, samples on
demand, so a set larger than memory opens in the time it takes to list its shards.

The generator also writes one (n,) dataset per example parameter (``speed_kmh``,
``doppler_hz``, ``cfo_hz``, ``sps``...); the numeric ones become the dataset's ``params``
(NaN in the shards that lack one), so a task can label by them. Text columns are skipped.
"""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np

from spectrumfm.data.dataset import H5Rows, IQDataset, windows_from_frames
from spectrumfm.errors import InputError

__all__ = ["read_shards"]

# Datasets of a shard that are not per-example parameters.
_NOT_PARAMS = {"iq", "label", "snr_db"}


def _classes(where: str, value) -> list[str]:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(f"{where}: attribute 'classes' is not a JSON list") from None
    elif isinstance(value, np.ndarray):
        value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise InputError(f"{where}: attribute 'classes' must be a non-empty list of names")
    return value


def _read_dataset_json(spec: str, path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeError, json.JSONDecodeError) as e:
        raise InputError(f"{spec}: dataset.json is not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise InputError(f"{spec}: dataset.json must hold a JSON object")
    return info


def _params(f, n: int) -> dict:
    """A shard's numeric per-example columns: name -> (n,) float32 (booleans, text and
    datasets of another shape are not parameters)."""
    import h5py
    out = {}
    for key, ds in f.items():
        if key in _NOT_PARAMS or not isinstance(ds, h5py.Dataset):
            continue
        if ds.shape == (n,) and ds.dtype.kind in "fiu":
            out[key] = np.asarray(ds[...], dtype=np.float32)
    return out


def _open_shard(spec: str, path: str):
    """One shard's (classes, samp_rate, length L, labels, SNRs, params), checked."""
    import h5py
    name = f"{spec}: shard {os.path.basename(path)}"
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{name}: not an HDF5 file ({e})") from None
    with f:
        for key in ("iq", "label"):
            if not isinstance(f.get(key), h5py.Dataset):
                raise InputError(f"{name}: no dataset {key!r}")
        iq, label = f["iq"], f["label"]
        if iq.ndim != 2 or iq.dtype.kind != "c":
            raise InputError(f"{name}: iq is {iq.dtype} {iq.shape}, expected complex (n, L)")
        n = iq.shape[0]
        if "classes" not in f.attrs:
            raise InputError(f"{name}: no attribute 'classes'")
        classes = _classes(name, f.attrs["classes"])
        labels = np.asarray(label[...]).reshape(-1)
        if len(labels) != n or labels.dtype.kind not in "iu":
            raise InputError(f"{name}: label is {label.dtype} {label.shape}, expected "
                             f"({n},) integers")
        if n and (labels.min() < 0 or labels.max() >= len(classes)):
            raise InputError(f"{name}: labels outside 0..{len(classes) - 1}")
        snr = np.full(n, np.nan, np.float32)
        if isinstance(f.get("snr_db"), h5py.Dataset):
            snr = np.asarray(f["snr_db"][...], dtype=np.float32).reshape(-1)
            if len(snr) != n:
                raise InputError(f"{name}: snr_db has {len(snr)} values for {n} examples")
        rate = f.attrs.get("samp_rate")
        try:
            rate = None if rate is None else float(np.asarray(rate).reshape(()))
        except (TypeError, ValueError):
            raise InputError(f"{name}: attribute samp_rate must be a number") from None
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise InputError(f"{name}: samp_rate must be positive, got {rate:g}")
        return classes, rate, iq.shape[1], labels.astype(np.int64), snr, _params(f, n)


def read_shards(spec: str, path: str, *, window_len: int, whole_frames: bool) -> IQDataset:
    """All shards of a generated dataset, in file-name order, as one dataset."""
    if not os.path.isdir(path):
        raise InputError(f"{spec}: not a directory (shards: names the folder the generator "
                         "wrote)")
    files = sorted(glob.glob(os.path.join(glob.escape(path), "*.h5")))
    if not files:
        raise InputError(f"{spec}: no *.h5 shards in the folder")
    info = _read_dataset_json(spec, os.path.join(path, "dataset.json"))
    parts, labels, snrs, params = [], [], [], []
    classes = rate = length = None
    for shard in files:
        c, r, L, lab, snr, p = _open_shard(spec, shard)
        name = f"{spec}: shard {os.path.basename(shard)}"
        if classes is None:
            classes, rate, length, first = c, r, L, os.path.basename(shard)
        elif c != classes:
            raise InputError(f"{name}: classes {c} differ from {classes} of shard {first}")
        elif L != length:
            raise InputError(f"{name}: examples of {L} samples, shard {first} has {length}")
        elif r != rate:
            raise InputError(f"{name}: samp_rate {r} differs from {rate} of shard {first}")
        parts.append(H5Rows(shard, "iq", len(lab)))
        labels.append(lab)
        snrs.append(snr)
        params.append(p)
    declared = info.get("classes")
    if declared is not None and declared != classes:
        raise InputError(f"{spec}: dataset.json lists classes {declared}, the shards {classes}")
    keys = sorted({k for p in params for k in p})
    frame_params = {k: np.concatenate([p.get(k, np.full(len(lab), np.nan, np.float32))
                                       for p, lab in zip(params, labels)]) for k in keys}
    return windows_from_frames(parts, np.concatenate(labels), np.concatenate(snrs), classes,
                               frame_len=length,
                               window_len=length if whole_frames else window_len,
                               samp_rate=rate, source=spec, frame_params=frame_params)
