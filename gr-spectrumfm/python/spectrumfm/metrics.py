"""Classification and detection metrics for `spectrumfm evaluate`, in numpy.

Written here rather than taken from scikit-learn: the project does not otherwise depend on
it (it would pull scipy, joblib and threadpoolctl into every install for some 100 lines of
counting), and owning the definitions pins down the corner cases the figures depend on:
a class never predicted has precision 0, a class absent from the labels is left out of the
macro average, tied scores count half in the ROC AUC, and Pd at a given Pfa is read off the
empirical ROC without interpolation (a threshold that really achieves it).

Labels are integer class indices; scores are "larger means more likely positive".
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["confusion_matrix", "classification_report", "accuracy_per_snr", "roc_curve",
           "roc_auc", "pd_at_pfa"]


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, row = true class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} labels but {p.size} predictions")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class index outside 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def classification_report(y_true, y_pred, classes) -> dict:
    """Accuracy, macro F1 and per-class precision / recall / F1 / support.

    Precision of a class that was never predicted is 0 (it earned no correct detections),
    as is an F1 with precision + recall = 0. The macro F1 averages over the classes present
    in ``y_true`` only: a class without test examples has no recall, and counting it as 0
    would punish the model for the test set's make-up.

    Returns:
        ``{"accuracy", "macro_f1", "per_class": {name: {"precision", "recall", "f1",
        "support"}}, "confusion": [[...]]}`` with plain Python numbers.
    """
    classes = [str(c) for c in classes]
    cm = confusion_matrix(y_true, y_pred, len(classes))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    per_class, f1s = {}, []
    for k, name in enumerate(classes):
        precision = _ratio(tp[k], predicted[k])
        recall = _ratio(tp[k], support[k])
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1,
                           "support": int(support[k])}
        if support[k]:
            f1s.append(f1)
    total = int(cm.sum())
    return {"accuracy": _ratio(tp.sum(), total),
            "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
            "per_class": per_class,
            "confusion": cm.tolist()}


def accuracy_per_snr(y_true, y_pred, snr_db) -> dict[str, float]:
    """Accuracy of each SNR present, keyed by the SNR in dB as a short string ("-4", "2.5").

    Windows of unknown SNR (NaN) are grouped under "unknown". Keys come in increasing SNR.
    """
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    snr = np.asarray(snr_db, dtype=np.float64).ravel()
    correct = t == p
    out = {}
    known = ~np.isnan(snr)
    for value in np.unique(snr[known]):
        sel = snr == value
        out[f"{value:g}"] = float(correct[sel].mean())
    if (~known).any():
        out["unknown"] = float(correct[~known].mean())
    return out


def _binary(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y, s


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC of the detector "positive if score >= threshold".

    One point per distinct score (tied scores move together), from (0, 0) at threshold
    +inf to (1, 1) at the lowest score.

    Returns:
        ``(pfa, pd, thresholds)``: false-alarm rate (negatives at or above the threshold),
        detection rate (positives at or above it) and the thresholds, all (k + 1,).
        A rate whose class is absent is NaN.
    """
    y, s = _binary(y_true, scores)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, bool)
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        pd = np.r_[0.0, tp] / (n_pos if n_pos else np.nan)
        pfa = np.r_[0.0, fp] / (n_neg if n_neg else np.nan)
    return pfa, pd, np.r_[np.inf, s[last_of_tie]]


def roc_auc(y_true, scores) -> float:
    """Area under the ROC: the chance that a random positive outscores a random negative,
    ties counting one half (the Mann–Whitney U statistic, equal to the trapezoidal area
    under :func:`roc_curve`). NaN when either class is absent."""
    y, s = _binary(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return math.nan
    # Average ranks (1-based) with ties sharing the mean of their positions.
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    ranks = np.empty(s.size, np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    mean_rank = (starts + ends + 1) / 2.0                     # mean of positions start+1..end
    ranks[order] = np.repeat(mean_rank, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pd_at_pfa(y_true, scores, pfa: float = 0.1) -> float:
    """Detection probability of the best threshold whose false-alarm rate is <= ``pfa``.

    Read off the empirical ROC without interpolating between its points: interpolation
    would report a randomised detector's Pd, which no single threshold attains. NaN when
    either class is absent.
    """
    if not 0.0 <= pfa <= 1.0:
        raise ValueError(f"pfa must lie in [0, 1], got {pfa}")
    fa, det, _ = roc_curve(y_true, scores)
    if np.isnan(fa).any() or np.isnan(det).any():
        return math.nan
    return float(det[fa <= pfa + 1e-12].max())
