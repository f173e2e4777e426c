"""The numpy metrics of `spectrumfm evaluate`, against values computed by hand."""

import numpy as np
import pytest

from spectrumfm import metrics


def test_020_classification_report_by_hand():
    rep = metrics.classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(4 / 6)
    prf = [m[k] for m in rep["per_class"].values() for k in ("precision", "recall", "f1")]
    # precision, recall, F1 of a, b, c
    assert prf == pytest.approx([0.5, 0.5, 0.5, 2 / 3, 1, 0.8, 1, 0.5, 2 / 3])
    assert rep["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert rep["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # Class c never predicted (precision 0, not NaN); class d absent (not in the macro mean).
    rep = metrics.classification_report([0, 1, 2], [0, 1, 1], ["a", "b", "c", "d"])
    assert rep["per_class"]["c"]["precision"] == 0.0 and rep["per_class"]["d"]["support"] == 0
    assert rep["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_021_accuracy_per_snr_by_hand():
    acc = metrics.accuracy_per_snr([0, 1, 1, 0, 1], [0, 0, 1, 0, 0],
                                   [-4, -4, 2.5, np.nan, np.nan])
    assert acc == {"-4": 0.5, "2.5": 1.0, "unknown": 0.5}
    assert list(acc) == ["-4", "2.5", "unknown"]


def test_022_roc_auc_and_pd_at_pfa_by_hand():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # A tie between a positive and a negative counts one half: (0.5 + 1 + 1 + 1) / 4.
    y, s = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    assert metrics.roc_auc(y, s) == pytest.approx(0.875)
    pfa, pd, _ = metrics.roc_curve(y, s)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert trapezoid(pd, pfa) == pytest.approx(0.875)
    assert np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))
    # Negatives 0.0 .. 0.9; thresholds keeping Pfa <= 0.1 admit one negative (0.9), and the
    # lowest such threshold (0.85) detects 0.85 and 0.95 of the four positives.
    y = [0] * 10 + [1] * 4
    s = [k / 10 for k in range(10)] + [0.85, 0.95, 0.5, 0.05]
    assert metrics.pd_at_pfa(y, s, 0.1) == pytest.approx(0.5)
    assert metrics.pd_at_pfa(y, s, 0.0) == pytest.approx(0.25)
    assert metrics.pd_at_pfa(y, s, 1.0) == 1.0
