"""DeepSig's RadioML datasets as the user downloads them: 2016.10a (pickle), 2018.01A (HDF5)."""

from __future__ import annotations

import pickle

import numpy as np

from spectrumfm.data.dataset import H5Rows, IQDataset, windows_from_frames
from spectrumfm.errors import InputError

__all__ = ["RML2018_CLASSES", "read_rml2016", "read_rml2018"]

#: RadioML 2018.01A's 24 modulations in the order of its one-hot ``Y`` columns.
RML2018_CLASSES = ["OOK", "4ASK", "8ASK", "BPSK", "QPSK", "8PSK", "16PSK", "32PSK", "16APSK",
                   "32APSK", "64APSK", "128APSK", "16QAM", "32QAM", "64QAM", "128QAM", "256QAM",
                   "AM-SSB-WC", "AM-SSB-SC", "AM-DSB-WC", "AM-DSB-SC", "FM", "GMSK", "OQPSK"]

# Rows of Y and Z read at a time, so that the 2.5 million labels of the real file are
# checked without holding its 490 MB one-hot matrix.
_CHUNK = 1 << 16


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _latin1_encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1"):
        raise _RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
# Unpickling calls whatever callables the file names (os.system, eval, ...), so loading a
# pickle from the internet can run any code. A RadioML 2016 file needs only numpy's array
# reconstruction, plus _codecs.encode, which Python 3 writes for bytes at protocol 2; any
# other global is refused before anything is called. Both numpy module names are accepted
# because files pickled by numpy 2 say numpy._core.
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("_codecs", "encode"): _latin1_encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _load_pickle(spec: str, path: str):
    try:
        with open(path, "rb") as f:
            # latin1: the file was written by Python 2, whose str held the array bytes.
            return _ArrayUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as e:
        raise InputError(f"{spec}: unsafe pickle refused: it calls {e}, which RadioML data "
                         "never needs (nothing was run)") from None
    except OSError as e:
        raise InputError(f"{spec}: cannot read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeError, MemoryError) as e:
        raise InputError(f"{spec}: not a RadioML 2016.10a pickle ({type(e).__name__}: "
                         f"{e})") from None


def read_rml2016(spec: str, path: str, *, window_len: int, whole_frames: bool) -> IQDataset:
    """RadioML 2016.10a: a pickled dict ``(modulation, snr_db) -> float32 (k, 2, 128)``
    with rows I and Q. Classes are the modulations sorted by name; examples come in the
    order of the sorted keys, so the labels do not depend on the file's dict order."""
    data = _load_pickle(spec, path)
    if not isinstance(data, dict) or not data:
        raise InputError(f"{spec}: not a RadioML 2016.10a pickle (expected a dict "
                         f"(modulation, snr) -> array, got {type(data).__name__})")
    entries = {}
    frame_len = None
    for key, value in data.items():
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], (str, bytes))
                and isinstance(key[1], (int, float, np.number))):
            raise InputError(f"{spec}: key {key!r} is not (modulation, snr)")
        mod = key[0].decode("latin1") if isinstance(key[0], bytes) else key[0]
        if not (isinstance(value, np.ndarray) and value.ndim == 3 and value.shape[1] == 2
                and value.dtype.kind in "fiu"):
            raise InputError(f"{spec}: {mod} at {key[1]} dB is not a numeric (k, 2, N) array "
                             f"(got {getattr(value, 'shape', type(value).__name__)})")
        if frame_len is not None and value.shape[2] != frame_len:
            raise InputError(f"{spec}: {mod} at {key[1]} dB has {value.shape[2]} samples per "
                             f"example, others {frame_len}")
        frame_len = value.shape[2]
        entries[(mod, float(key[1]))] = value
    classes = sorted({mod for mod, _ in entries})
    n = sum(len(v) for v in entries.values())
    frames = np.empty((n, frame_len), np.complex64)
    labels = np.empty(n, np.int64)
    snr = np.empty(n, np.float32)
    at = 0
    for (mod, snr_db), value in sorted(entries.items()):
        k = len(value)
        frames[at:at + k].real = value[:, 0, :]
        frames[at:at + k].imag = value[:, 1, :]
        labels[at:at + k] = classes.index(mod)
        snr[at:at + k] = snr_db
        at += k
    return windows_from_frames(frames, labels, snr, classes, frame_len=frame_len,
                               window_len=frame_len if whole_frames else window_len,
                               source=spec)


def _h5_dataset(spec, f, name, ndim):
    import h5py
    ds = f.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise InputError(f"{spec}: no dataset {name!r} (RadioML 2018.01A has X, Y and Z)")
    if ds.ndim not in ndim:
        raise InputError(f"{spec}: {name} has shape {ds.shape}, expected {ndim[0]} dimensions")
    return ds


def read_rml2018(spec: str, path: str, *, window_len: int, whole_frames: bool) -> IQDataset:
    """RadioML 2018.01A: HDF5 with ``X`` float32 (n, 1024, 2) I/Q, one-hot ``Y`` (n, 24) and
    ``Z`` (n, 1) SNR in dB. Only labels and SNRs are read now; samples are read on demand."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{spec}: not an HDF5 file ({e})") from None
    with f:
        x = _h5_dataset(spec, f, "X", (3,))
        y = _h5_dataset(spec, f, "Y", (2,))
        z = _h5_dataset(spec, f, "Z", (2, 1))
        n, frame_len = x.shape[:2]
        if x.shape[2] != 2 or x.dtype.kind != "f":
            raise InputError(f"{spec}: X is {x.dtype} {x.shape}, expected float (n, N, 2) I/Q")
        if y.shape != (n, len(RML2018_CLASSES)):
            raise InputError(f"{spec}: Y has shape {y.shape}, expected one-hot "
                             f"({n}, {len(RML2018_CLASSES)})")
        if z.shape[0] != n or z.size != n:
            raise InputError(f"{spec}: Z has shape {z.shape}, expected ({n}, 1) SNRs")
        labels = np.empty(n, np.int64)
        for lo in range(0, n, _CHUNK):
            onehot = y[lo:lo + _CHUNK]
            bad = (onehot.sum(axis=1) != 1) | (onehot.max(axis=1) != 1)
            if bad.any():
                raise InputError(f"{spec}: Y row {lo + int(np.argmax(bad))} is not one-hot")
            labels[lo:lo + len(onehot)] = onehot.argmax(axis=1)
        snr = np.asarray(z[...], dtype=np.float32).reshape(n)
    return windows_from_frames([H5Rows(path, "X", n)], labels, snr, RML2018_CLASSES,
                               frame_len=frame_len,
                               window_len=frame_len if whole_frames else window_len,
                               source=spec)
