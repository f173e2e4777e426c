"""``spectrumfm generate``: a labelled dataset as a folder of HDF5 shards.

Layout (read back by ``open_dataset("shards:DIR")``)::

    DIR/shard-00000.h5 ...   iq (n, L) complex64, label (n,) int64, snr_db (n,) float32,
                             one (n,) dataset per other example parameter (sps, cfo_hz,
                             speed_kmh, ...: the data readers' ``params``);
                             attributes classes (JSON list, label order) and samp_rate (Hz)
    DIR/dataset.json         the recipe, the counts, every shard with its SHA-256

Example ``g`` (0-based over the whole set) is of class ``g % C`` and is the
``g // C``-th example of that class, so every shard, and any prefix of the set, is balanced.
Its random generator is seeded with ``(seed, class index, example index)`` alone: the same
recipe gives the same bytes whatever the number of workers or the shard size, and one example
can be regenerated on its own (:func:`make_example`).

Levels: every example holds receiver noise of unit variance per complex sample; a signal's
in-band SNR (its mean power over the samples where it transmits, over the noise power inside
its occupied bandwidth) sets its level above that floor. ``noise`` examples are the floor only.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import math
import multiprocessing
import os
import signal

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.synth import core
from spectrumfm.synth.recipe import Recipe, resolve_waveform

__all__ = ["make_example", "generate", "noise", "signal_level", "DATASET_FORMAT"]

log = logging.getLogger("spectrumfm")
DATASET_FORMAT = "spectrumfm-shards"
_RESERVED = {"iq", "label", "snr_db"}


def signal_level(snr_db: float, bandwidth: float, samp_rate: float) -> float:
    """Amplitude that puts a unit-power signal of ``bandwidth`` Hz at ``snr_db`` in-band SNR
    over white noise of unit variance per sample at ``samp_rate``.

    The noise power inside the band is ``min(bandwidth, samp_rate) / samp_rate``.
    """
    share = min(max(float(bandwidth), 1e-9), samp_rate) / samp_rate
    return math.sqrt(10.0 ** (snr_db / 10.0) * share)


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Complex white Gaussian noise of unit variance per sample, complex64."""
    w = rng.standard_normal(2 * n, dtype=np.float32) * np.float32(math.sqrt(0.5))
    return w.view(np.complex64)


def _signal(recipe: Recipe, name: str, rng, params: dict):
    fs, n = recipe.samp_rate, recipe.length
    if recipe.family == "anomaly":
        from spectrumfm.synth.anomalies import anomaly_example
        return anomaly_example(rng, fs, n, name, **params)
    if recipe.family == "sensing":
        if name == "noise":
            return None
        return resolve_waveform(name).generate(rng, fs, n, **params)
    return core.get(recipe.family, name).generate(rng, fs, n, **params)


def make_example(recipe: Recipe, imp, class_index: int, example_index: int):
    """One example: ``(iq complex64 (L,), snr_db, params)``, a function of its indices.

    ``imp`` is the recipe's :class:`~spectrumfm.synth.impairments.Impairments`. The SNR is
    drawn first, so it does not depend on how many draws the waveform makes.
    """
    from spectrumfm.synth.impairments import apply_channel, apply_receiver
    rng = np.random.default_rng([recipe.seed, class_index, example_index])
    if recipe.snr_db is not None:
        snr = float(recipe.snr_db)
    else:
        snr = float(rng.uniform(*recipe.snr_range))
    name = recipe.classes[class_index]
    sig = _signal(recipe, name, rng, dict(recipe.params.get(name, {})))
    floor = noise(rng, recipe.length)
    if sig is None:  # receiver noise only: no SNR to speak of
        x, params, snr = floor, {}, math.nan
    else:
        x, params = apply_channel(sig.iq, rng, recipe.samp_rate, imp)
        params = {**sig.params, **params, "bandwidth_hz": sig.bandwidth}
        x = x * np.float32(signal_level(snr, sig.bandwidth, recipe.samp_rate)) + floor
    x, rx_params = apply_receiver(x, rng, imp)
    return np.asarray(x, np.complex64), snr, {**params, **rx_params}


# -- shards --------------------------------------------------------------------------------

def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.h5"


def _columns(params: list[dict], n: int) -> dict:
    """Per-example parameters as columns: numbers as float64 (NaN where absent), others as
    strings ('' where absent)."""
    keys = sorted({k for p in params for k in p} - _RESERVED)
    cols = {}
    for k in keys:
        values = [p.get(k) for p in params]
        if all(v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
               for v in values):
            cols[k] = np.array([np.nan if v is None else float(v) for v in values], np.float64)
        else:
            cols[k] = np.array(["" if v is None else str(v) for v in values], dtype=object)
    return cols


def _write_shard(recipe_dict: dict, out_dir: str, shard: int) -> tuple[int, str, int]:
    """Generate and write shard ``shard`` (run in a worker); returns (shard, file, n)."""
    import h5py
    from spectrumfm.synth.impairments import Impairments
    recipe = Recipe.build(recipe_dict)
    imp = Impairments.from_dict(recipe.impairments, where="impairments")
    C = len(recipe.classes)
    total = C * recipe.n_per_class
    g = np.arange(shard * recipe.shard_size, min(total, (shard + 1) * recipe.shard_size))
    iq = np.empty((len(g), recipe.length), np.complex64)
    snr = np.empty(len(g), np.float32)
    params = []
    for row, gi in enumerate(g):
        iq[row], snr[row], p = make_example(recipe, imp, int(gi % C), int(gi // C))
        params.append(p)
    name = _shard_name(shard)
    tmp = os.path.join(out_dir, f".{name}.tmp")
    # track_times=False: no modification times in the object headers, so the same recipe
    # gives the same bytes.
    with h5py.File(tmp, "w") as f:
        f.attrs["classes"] = json.dumps(recipe.classes)
        f.attrs["samp_rate"] = float(recipe.samp_rate)
        f.attrs["format"] = DATASET_FORMAT
        f.create_dataset("iq", data=iq, track_times=False)
        f.create_dataset("label", data=(g % C).astype(np.int64), track_times=False)
        f.create_dataset("snr_db", data=snr, track_times=False)
        for key, col in _columns(params, len(g)).items():
            dtype = h5py.string_dtype() if col.dtype == object else col.dtype
            f.create_dataset(key, data=col, dtype=dtype, track_times=False)
    os.replace(tmp, os.path.join(out_dir, name))
    return shard, name, len(g)


def _prepare_dir(out_dir: str, overwrite: bool) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"{out_dir}: exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise InputError(f"{out_dir}: its parent directory {parent} does not exist")
    os.makedirs(out_dir, exist_ok=True)
    present = os.listdir(out_dir)
    if not present:
        return
    if not overwrite:
        raise InputError(f"{out_dir}: not empty ({len(present)} entries); choose an empty "
                         "folder, or add --overwrite to replace the dataset there")
    # Only what a dataset consists of goes; anything else the user keeps there stays.
    for path in glob.glob(os.path.join(glob.escape(out_dir), "*.h5")) + \
            glob.glob(os.path.join(glob.escape(out_dir), ".shard-*.tmp")) + \
            [os.path.join(out_dir, "dataset.json")]:
        if os.path.isfile(path):
            os.remove(path)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def generate(recipe: Recipe, out_dir: str, *, workers: int = 1, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Write the dataset of ``recipe`` to ``out_dir``; returns what ``dataset.json`` holds.

    Shards are made by ``workers`` processes, each holding one shard in memory at a time, and
    appear under their final name only when complete; ``dataset.json`` is written last, so a
    folder without it is an interrupted run.
    """
    from tqdm import tqdm
    _prepare_dir(out_dir, overwrite)
    C, total = len(recipe.classes), len(recipe.classes) * recipe.n_per_class
    n_shards = math.ceil(total / recipe.shard_size)
    workers = max(1, min(int(workers), n_shards))
    rd = recipe.to_dict()
    done: dict[int, tuple[str, int]] = {}
    bar = tqdm(total=total, unit="ex", desc="generate", disable=not progress, leave=False)
    try:
        if workers == 1:
            results = (_write_shard(rd, out_dir, s) for s in range(n_shards))
            _collect(results, done, bar)
        else:
            ctx = multiprocessing.get_context("spawn")
            with _one_thread_each(), ctx.Pool(workers, initializer=_ignore_sigint) as pool:
                args = [(rd, out_dir, s) for s in range(n_shards)]
                _collect(pool.imap_unordered(_star_write, args), done, bar)
    except KeyboardInterrupt:
        for tmp in glob.glob(os.path.join(glob.escape(out_dir), ".shard-*.tmp")):
            os.remove(tmp)
        raise InputError(f"{out_dir}: interrupted after {len(done)} of {n_shards} shards; "
                         "no dataset.json was written (run again with --overwrite)") from None
    finally:
        bar.close()
    info = {"format": DATASET_FORMAT, "format_version": 1, "recipe": rd,
            "family": recipe.family, "classes": list(recipe.classes),
            "samp_rate": recipe.samp_rate, "length": recipe.length,
            "n_examples": total, "n_per_class": recipe.n_per_class,
            "level": "unit noise variance per sample; signals at their in-band SNR",
            "shards": [{"file": done[s][0], "n": done[s][1],
                        "sha256": _sha256(os.path.join(out_dir, done[s][0]))}
                       for s in sorted(done)]}
    tmp = os.path.join(out_dir, ".dataset.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "dataset.json"))
    return info


@contextlib.contextmanager
def _one_thread_each():
    """Workers inherit one BLAS/OpenMP thread each: ``workers`` processes already use the
    cores, and more threads per process would only oversubscribe them."""
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ignore_sigint():
    # Ctrl-C reaches the whole process group: the parent alone handles it (it stops the pool
    # and says what was written), so the workers do not each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _star_write(args):
    return _write_shard(*args)


def _collect(results, done: dict, bar) -> None:
    for shard, name, n in results:
        done[shard] = (name, n)
        bar.update(n)
