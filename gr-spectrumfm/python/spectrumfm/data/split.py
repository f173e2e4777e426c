"""Train / validation / test splits, stratified by class and SNR, reproducible from a seed."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["split_indices"]


SNR_BIN_DB = 2.0


def split_indices(labels, snr_db, fractions=(0.8, 0.1, 0.1), seed: int = 0, groups=None):
    """Split windows into (train_idx, val_idx, test_idx), each sorted int64.

    Every (class, SNR in 2 dB bins) stratum is shuffled with ``numpy.random.default_rng(seed)`` and cut in
    the given fractions, so each split holds every stratum in proportion; the three are
    disjoint and cover all windows. Unknown SNRs (NaN) form one stratum per class.

    Args:
        labels: (n,) class labels.
        snr_db: (n,) SNRs in dB (NaN where unknown).
        fractions: shares of train, validation and test; non-negative, summing to 1.
        seed: the same seed gives the same split.
        groups: optional (n,) ids, e.g. ``IQDataset.frame_index``: windows of one group go
            to the same split, so the windows of one RadioML frame are never in both train
            and test. Each group is stratified by its first window's class and SNR.
    """
    labels = np.asarray(labels).ravel()
    snr = np.asarray(snr_db, dtype=np.float64).ravel()
    if len(snr) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(snr)} SNRs")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or not np.all(fr >= 0) or not math.isclose(fr.sum(), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be three shares >= 0 summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    if groups is None:
        part = _stratified_parts(labels, snr, fr, rng)
    else:
        groups = np.asarray(groups).ravel()
        if len(groups) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(groups)} group ids")
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        part = _stratified_parts(labels[first], snr[first], fr, rng)[inverse]
    return tuple(np.flatnonzero(part == k).astype(np.int64) for k in range(3))


def _stratified_parts(labels, snr, fractions, rng) -> np.ndarray:
    """Which split (0, 1, 2) each item goes to."""
    n = len(labels)
    if n == 0:
        return np.zeros(0, np.int64)
    _, label_code = np.unique(labels, return_inverse=True)
    # NaN compares unequal to itself, so it is given a code of its own before np.unique.
    nan = np.isnan(snr)
    # SNRs are binned to 2 dB (RadioML's steps, unchanged by it): a generated set draws a
    # continuous SNR per example, and strata of one example each would all go to training.
    binned = np.round(np.where(nan, 0.0, snr) / SNR_BIN_DB) * SNR_BIN_DB
    _, snr_code = np.unique(np.where(nan, np.inf, binned), return_inverse=True)
    stratum = label_code.astype(np.int64) * (snr_code.max() + 1) + snr_code
    _, stratum, sizes = np.unique(stratum, return_inverse=True, return_counts=True)
    # Members of each stratum, consecutive and in random order.
    order = np.lexsort((rng.random(n), stratum))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    counts = _allocate(sizes, fractions, rng)                 # (strata, 3)
    bounds = np.cumsum(counts, axis=1)                        # end of train, val, test
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)     # position within its stratum
    s = stratum
    part = np.where(rank < bounds[s, 0], 0, np.where(rank < bounds[s, 1], 1, 2))
    return part.astype(np.int64)


def _allocate(sizes: np.ndarray, fractions: np.ndarray, rng) -> np.ndarray:
    """Whole counts per stratum and split closest to size * fraction (largest remainder).

    Ties in the remainders are broken at random: a fixed order would hand every small
    stratum's odd item to the same split and skew the overall proportions.
    """
    exact = sizes[:, None] * fractions[None, :]
    counts = np.floor(exact + 1e-9).astype(np.int64)
    remainder = exact - counts
    for s in range(len(sizes)):
        missing = int(sizes[s] - counts[s].sum())
        if missing:
            jitter = rng.random(3) * 1e-6
            counts[s, np.argsort(-(remainder[s] + jitter))[:missing]] += 1
    return counts
