"""Labelled windows from SigMF recordings: every annotation with a ``core:label`` is a
labelled segment, cut into non-overlapping windows (a tail shorter than a window is left out).

The SNR is an annotation field whose name ends in ``:snr_db`` (``spectrumfm:snr_db``, as our
recorder and scene generator write it), else NaN. An annotation spans the whole captured
band over its samples: its frequency edges are not used to filter the window.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import tarfile

import numpy as np

from spectrumfm.data.dataset import IQDataset, LazyWindows
from spectrumfm.errors import InputError
from spectrumfm.recording import open_recording

__all__ = ["read_sigmf", "SegmentWindows"]

log = logging.getLogger("spectrumfm")


class SegmentWindows(LazyWindows):
    """Window i is ``window_len`` samples from ``starts[i]`` of recording ``paths[rec[i]]``.

    Recordings are opened on first read in each process, so the array pickles small (a
    recording's memory map would be copied whole) and works in DataLoader workers.
    """

    def __init__(self, paths, rec, starts, window_len: int):
        super().__init__(len(starts), window_len)
        self.paths, self.rec, self.starts = list(paths), rec, starts
        self._open = {}

    def _read(self, idx):
        out = np.empty((len(idx), self.shape[1]), np.complex64)
        for k, i in enumerate(idx):
            r = int(self.rec[i])
            if r not in self._open:
                self._open[r] = open_recording(self.paths[r])
            out[k] = self._open[r].read(int(self.starts[i]), self.shape[1])
        return out

    def close(self) -> None:
        for rec in self._open.values():
            rec.close()
        self._open = {}

    def __getstate__(self):
        return {**self.__dict__, "_open": {}}


def _recordings(spec: str, path: str) -> list[str]:
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(glob.escape(path), "*.sigmf-meta")) +
                       glob.glob(os.path.join(glob.escape(path), "*.sigmf")))
        if not found:
            raise InputError(f"{spec}: no SigMF recordings (*.sigmf-meta, *.sigmf) in the folder")
        return found
    return [path]


def _metadata(spec: str, path: str) -> dict:
    """The SigMF metadata of a recording named as open_recording accepts it."""
    if path.endswith(".sigmf-data"):
        path = path[: -len(".sigmf-data")] + ".sigmf-meta"
    if not os.path.exists(path):
        path = next((path + s for s in (".sigmf-meta", ".sigmf") if os.path.isfile(path + s)),
                    path)
    try:
        if path.endswith(".sigmf-meta"):
            with open(path, "rb") as f:
                raw = f.read()
        elif tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as tar:
                # The member open_recording reads: the first metadata file by name.
                metas = sorted(m.name for m in tar.getmembers()
                               if m.isfile() and m.name.endswith(".sigmf-meta"))
                raw = tar.extractfile(metas[0]).read() if metas else b""
        else:
            raise InputError(f"{spec}: {path} is not a SigMF recording (.sigmf-meta or .sigmf)")
        meta = json.loads(raw.decode("utf-8"))
    except (OSError, tarfile.TarError, UnicodeError, json.JSONDecodeError) as e:
        raise InputError(f"{spec}: {path}: cannot read SigMF metadata ({e})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{spec}: {path}: SigMF metadata is not a JSON object")
    return meta


def _count(where: str, key: str, value, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
            or value != int(value):
        raise InputError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
    return int(value)


def _snr(where: str, annotation: dict) -> float:
    for key, value in annotation.items():
        if key.endswith(":snr_db"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise InputError(f"{where}: {key} must be a finite number, got {value!r}")
            return float(value)
    return math.nan


def read_sigmf(spec: str, path: str, *, window_len: int) -> IQDataset:
    """Labelled windows from one recording or from every recording in a folder.

    Classes are the labels sorted by name; a window's ``frame_index`` is its annotation
    (numbered across all recordings), so a segment's windows can be voted over.
    """
    paths = _recordings(spec, path)
    rec_ids, starts, segments, seg_labels, seg_snrs = [], [], [], [], []
    rates = set()
    short = 0
    for r, p in enumerate(paths):
        with open_recording(p) as rec:
            rates.add(rec.samp_rate)
            n_samples = rec.num_samples
        annotations = _metadata(spec, p).get("annotations") or []
        if not isinstance(annotations, list):
            raise InputError(f"{spec}: {p}: 'annotations' must be a list")
        for a, ann in enumerate(annotations):
            if not isinstance(ann, dict) or "core:label" not in ann:
                continue
            where = f"{spec}: {p}: annotation {a}"
            label = ann["core:label"]
            if not isinstance(label, str) or not label.strip():
                raise InputError(f"{where}: core:label must be non-empty text, got {label!r}")
            start = _count(where, "core:sample_start", ann.get("core:sample_start"), 0)
            count = _count(where, "core:sample_count", ann.get("core:sample_count"),
                           max(0, n_samples - start))
            n_win = max(0, min(count, n_samples - start)) // window_len
            if n_win == 0:
                short += 1
                continue
            rec_ids.append(np.full(n_win, r, np.int32))
            starts.append(start + window_len * np.arange(n_win, dtype=np.int64))
            segments.append(np.full(n_win, len(seg_labels), np.int64))
            seg_labels.append(label.strip())
            seg_snrs.append(_snr(where, ann))
    if short:
        log.warning("%s: %d labelled annotation(s) shorter than one window of %d samples "
                    "left out", spec, short, window_len)
    if not seg_labels:
        raise InputError(f"{spec}: no annotation with a core:label spans a window of "
                         f"{window_len} samples")
    classes = sorted(set(seg_labels))
    frame_index = np.concatenate(segments)
    labels = np.array([classes.index(c) for c in seg_labels], np.int64)[frame_index]
    snr = np.array(seg_snrs, np.float32)[frame_index]
    if len(rates) > 1:
        log.warning("%s: recordings at different sample rates %s; samp_rate left unset", spec,
                    sorted(rates))
    iq = SegmentWindows(paths, np.concatenate(rec_ids), np.concatenate(starts), window_len)
    return IQDataset(iq, labels, snr, classes, samp_rate=rates.pop() if len(rates) == 1 else None,
                     frame_index=frame_index, source=spec)
