"""Labelled IQ windows in memory or read on demand, and the lazy window arrays behind them.

A reader returns an :class:`IQDataset`. Its ``iq`` is a numpy array when the data fit in
memory (RadioML 2016.10a), else a :class:`LazyWindows` that reads only the rows asked for
(RadioML 2018.01A is 20 GB). Both index the same way: ``iq[i]`` is one (window_len,) complex64
window, ``iq[indices]`` a (k, window_len) batch, in the order asked.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

import numpy as np

from spectrumfm.errors import InputError

__all__ = ["IQDataset", "LazyWindows", "FrameWindows", "ConcatWindows", "NoiseWindows",
           "H5Rows", "windows_from_frames"]


class LazyWindows(ABC):
    """A read-only (n, window_len) complex64 array whose rows are read when indexed.

    Subclasses give ``_read(idx)`` for sorted, unique indices; indexing here handles ints,
    slices, index arrays in any order with repeats, boolean masks and ``iq[rows, cols]``.
    """

    dtype = np.dtype(np.complex64)
    ndim = 2

    def __init__(self, n: int, window_len: int):
        self.shape = (int(n), int(window_len))

    def __len__(self) -> int:
        return self.shape[0]

    @abstractmethod
    def _read(self, idx: np.ndarray) -> np.ndarray:
        """The windows at sorted, unique row indices ``idx``: complex64 (len(idx), window_len)."""

    def __getitem__(self, key):
        if isinstance(key, tuple):
            rows = self[key[0]]
            return rows[key[1:]] if rows.ndim == 1 else rows[(slice(None),) + key[1:]]
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"window {key} out of range for {n} windows")
            return self._read(np.array([i]))[0]
        if isinstance(key, slice):
            idx = np.arange(*key.indices(n))
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        if idx.size == 0:
            return np.zeros(idx.shape + (self.shape[1],), np.complex64)
        if idx.min() < 0 or idx.max() >= n:
            raise IndexError(f"window index out of range for {n} windows")
        uniq, inverse = np.unique(idx, return_inverse=True)
        return self._read(uniq)[inverse.reshape(idx.shape)]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class H5Rows:
    """Rows of one HDF5 dataset, read on demand.

    The file is (re)opened in whichever process reads: an h5py handle inherited through
    fork (a DataLoader worker) is not safe to use, and a pickled one (spawn) cannot be.
    """

    def __init__(self, path: str, name: str, n_rows: int):
        self.path, self.name, self.n_rows = path, name, int(n_rows)
        self._pid = self._file = self._ds = None

    def __len__(self) -> int:
        return self.n_rows

    def _dataset(self):
        if self._pid != os.getpid():
            import h5py
            self._file = h5py.File(self.path, "r")
            self._ds = self._file[self.name]
            self._pid = os.getpid()
        return self._ds

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (sorted, unique), read as slices: a nearly contiguous set as one, else
        one per run of consecutive rows. h5py's index-list selection is 3-4 times slower
        than this on a chunked file (measured: 256 random rows of 8 KB, 50 ms vs 14 ms)."""
        ds = self._dataset()
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if hi - lo <= 2 * len(idx) + 64:
            return ds[lo:hi][idx - lo]
        runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
        return np.concatenate([ds[int(r[0]):int(r[-1]) + 1] for r in runs])

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._pid = self._file = self._ds = None

    def __getstate__(self):
        return {**self.__dict__, "_pid": None, "_file": None, "_ds": None}


class FrameWindows(LazyWindows):
    """Windows cut from fixed-length frames: window i is samples
    ``[(i % per) * window_len, ... + window_len)`` of frame ``i // per``.

    ``parts`` is a list of :class:`H5Rows` (or anything with ``len()`` and ``rows(idx)``)
    holding frames as complex (n, frame_len) or as I/Q pairs (n, frame_len, 2); several
    parts make one sequence of frames (the shards of a dataset).
    """

    def __init__(self, parts, frame_len: int, window_len: int):
        self.parts = list(parts)
        self.per = frame_len // window_len
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        super().__init__(self.starts[-1] * self.per, window_len)

    def _read(self, idx):
        w = self.shape[1]
        frame, slot = np.divmod(idx, self.per)
        out = np.empty((len(idx), w), np.complex64)
        part = np.searchsorted(self.starts, frame, side="right") - 1
        for p in np.unique(part):
            sel = part == p
            frames, inverse = np.unique(frame[sel] - self.starts[p], return_inverse=True)
            data = _as_complex(self.parts[p].rows(frames))        # (k, frame_len)
            # (k, per, window_len): frame k's window j is data[k, j*w:(j+1)*w].
            cut = data[:, : self.per * w].reshape(len(frames), self.per, w)
            out[sel] = cut[inverse, slot[sel]]
        return out

    def close(self) -> None:
        for p in self.parts:
            p.close()


def _as_complex(data: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(data):
        return data.astype(np.complex64, copy=False)
    # (k, L, 2) I/Q pairs -> (k, L): adjacent float32 I and Q are one complex64.
    return np.ascontiguousarray(data, dtype=np.float32).view(np.complex64)[..., 0]


class NoiseWindows(LazyWindows):
    """Unit-power complex white Gaussian noise; window i is the same on every read
    (drawn from a generator seeded with ``(seed, i)``), so no memory holds it."""

    def __init__(self, n: int, window_len: int, seed: int = 0):
        super().__init__(n, window_len)
        self.seed = int(seed)

    def _read(self, idx):
        out = np.empty((len(idx), self.shape[1]), np.complex64)
        for k, i in enumerate(idx):
            z = np.random.default_rng([self.seed, int(i)]).standard_normal((2, self.shape[1]))
            out[k].real, out[k].imag = z * np.sqrt(0.5)
        return out


class ConcatWindows(LazyWindows):
    """Window arrays (numpy or lazy) of one window length, one after another."""

    def __init__(self, arrays):
        self.arrays = list(arrays)
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        super().__init__(self.starts[-1], self.arrays[0].shape[1])

    def _read(self, idx):
        out = np.empty((len(idx), self.shape[1]), np.complex64)
        part = np.searchsorted(self.starts, idx, side="right") - 1
        for p in np.unique(part):
            sel = part == p
            out[sel] = self.arrays[p][idx[sel] - self.starts[p]]
        return out

    def close(self) -> None:
        for a in self.arrays:
            if hasattr(a, "close"):
                a.close()


class _TakeWindows(LazyWindows):
    def __init__(self, base, indices):
        super().__init__(len(indices), base.shape[1])
        self.base, self.indices = base, indices

    def _read(self, idx):
        return self.base[self.indices[idx]]

    def close(self) -> None:
        if hasattr(self.base, "close"):
            self.base.close()


class IQDataset:
    """Labelled IQ windows.

    Attributes:
        iq: (n, window_len) complex64, a numpy array or a :class:`LazyWindows`.
        labels: (n,) int64 indices into ``classes``.
        snr_db: (n,) float32 SNR in dB, NaN where the source does not say.
        classes: class names in label order.
        samp_rate: sample rate in S/s, or None where the source does not say.
        frame_index: (n,) int64, the frame (RadioML example, shard example, SigMF annotation)
            each window was cut from; a frame's windows are consecutive, so whole-frame
            evaluation can vote over them.
        source: the dataset spec it was read from.
        params: the source's other per-example numbers, each (n,) float32 per window, NaN
            where an example has none (the generator's ``speed_kmh``, ``doppler_hz``,
            ``cfo_hz``...); empty for sources that record none. They let a task label by
            what made an example (the snr-mobility task reads ``speed_kmh``).
        source_rows: (n,) int64 or None: where a task left windows out, the index of each
            window in the dataset as read before the task, so a split made of that dataset
            (pretraining's) can be followed; None when no window was left out.
        left_out: how many windows of the dataset as read the task left out.
    """

    def __init__(self, iq, labels, snr_db, classes, *, samp_rate=None, frame_index=None,
                 source: str = "", params=None, source_rows=None, left_out: int = 0):
        n = len(iq)
        self.iq = iq
        self.labels = np.asarray(labels, dtype=np.int64).reshape(n)
        self.snr_db = np.asarray(snr_db, dtype=np.float32).reshape(n)
        self.classes = [str(c) for c in classes]
        self.samp_rate = None if samp_rate is None else float(samp_rate)
        self.frame_index = (np.arange(n, dtype=np.int64) if frame_index is None
                            else np.asarray(frame_index, dtype=np.int64).reshape(n))
        self.source = source
        self.params = {str(k): np.asarray(v, dtype=np.float32).reshape(n)
                       for k, v in (params or {}).items()}
        self.source_rows = (None if source_rows is None
                            else np.asarray(source_rows, dtype=np.int64).reshape(n))
        self.left_out = int(left_out)

    def replace(self, **changes) -> "IQDataset":
        """A dataset with the same windows and attributes but ``changes`` (keyword names of
        the constructor): a reader's relabelling or cropping keeps everything else."""
        kw = {"iq": self.iq, "labels": self.labels, "snr_db": self.snr_db,
              "classes": self.classes, "samp_rate": self.samp_rate,
              "frame_index": self.frame_index, "source": self.source, "params": self.params,
              "source_rows": self.source_rows, "left_out": self.left_out}
        unknown = set(changes) - set(kw)
        if unknown:
            raise TypeError(f"IQDataset.replace: unknown fields {sorted(unknown)}")
        kw.update(changes)
        iq, labels, snr_db, classes = (kw.pop(k) for k in ("iq", "labels", "snr_db", "classes"))
        return IQDataset(iq, labels, snr_db, classes, **kw)

    @property
    def window_len(self) -> int:
        return int(self.iq.shape[1])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        """Window ``i`` as (complex64 (window_len,), label, SNR in dB)."""
        return np.asarray(self.iq[i], dtype=np.complex64), int(self.labels[i]), \
            float(self.snr_db[i])

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows ``indices`` in one read: (complex64 (k, window_len), labels, SNRs)."""
        idx = np.asarray(indices, dtype=np.int64)
        return np.asarray(self.iq[idx], dtype=np.complex64), self.labels[idx], self.snr_db[idx]

    def subset(self, indices) -> "IQDataset":
        """The windows ``indices`` (e.g. one split of :func:`split_indices`) as a dataset;
        lazy sources stay lazy."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.iq, np.ndarray):
            iq = self.iq[idx]
        elif isinstance(self.iq, _TakeWindows):
            iq = _TakeWindows(self.iq.base, self.iq.indices[idx])
        else:
            iq = _TakeWindows(self.iq, idx)
        return self.replace(iq=iq, labels=self.labels[idx], snr_db=self.snr_db[idx],
                            frame_index=self.frame_index[idx],
                            params={k: v[idx] for k, v in self.params.items()},
                            source_rows=None if self.source_rows is None
                            else self.source_rows[idx])

    def torch(self):
        """This dataset as a ``torch.utils.data.Dataset`` (see :mod:`.torch_dataset`)."""
        from spectrumfm.data.torch_dataset import TorchIQDataset
        return TorchIQDataset(self)

    def close(self) -> None:
        """Close files a lazy ``iq`` holds open (reads after this reopen them)."""
        if hasattr(self.iq, "close"):
            self.iq.close()

    def __enter__(self) -> "IQDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"IQDataset({self.source!r}, {len(self)} windows of {self.window_len}, "
                f"{len(self.classes)} classes)")


def windows_from_frames(frames, frame_labels, frame_snr_db, classes, *, frame_len: int,
                        window_len: int, samp_rate=None, source: str = "",
                        frame_params=None) -> IQDataset:
    """Cut fixed-length frames into non-overlapping windows that inherit their frame's label,
    SNR and ``frame_params`` (name -> (n_frames,) numbers), as the SpectrumFM code cuts
    RadioML 2018's 1024-sample frames into 128.

    ``frames`` is a complex64 (n, frame_len) array, or a list of :class:`H5Rows` parts read
    lazily. Raises InputError naming ``source`` when the frames do not split evenly.
    """
    if frame_len % window_len:
        raise InputError(f"{source}: frames of {frame_len} samples do not split into windows "
                         f"of {window_len} (use a window length that divides {frame_len})")
    per = frame_len // window_len
    if isinstance(frames, np.ndarray):
        iq = frames.reshape(-1, window_len)                   # (n_frames * per, window_len)
        n_frames = len(frames)
    else:
        iq = FrameWindows(frames, frame_len, window_len)
        n_frames = len(iq) // per
    return IQDataset(iq, np.repeat(frame_labels, per), np.repeat(frame_snr_db, per), classes,
                     samp_rate=samp_rate, source=source,
                     frame_index=np.repeat(np.arange(n_frames, dtype=np.int64), per),
                     params={k: np.repeat(np.asarray(v, np.float32), per)
                             for k, v in (frame_params or {}).items()})
