"""`spectrumfm evaluate --scenes`: occupancy on two-emitter scenes, model against the energy
detector on the same cells (issue 6's bar), the fusion fit, and the scene-bootstrap intervals.

The model folder is a random-weight fixture (tests/engine_fixtures.py): its own Pd means
nothing, but the detector's column, the cells and the written fusion are real.
"""

import json

import numpy as np
import pytest

from sfm_testutil import run_cli
from spectrumfm_apps.eval_scenes import bootstrap_gains


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from engine_fixtures import make_model_dir
    return make_model_dir(tmp_path_factory.mktemp("models") / "spectrumfm-tiny", ("sensing",))


def test_evaluate_scenes_calibrates_and_reports_every_snr(model_dir):
    res = run_cli("evaluate", "--model", model_dir, "--scenes", 1, "--snr=-5,5", "--channels", 8,
                  "--calibrate", "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["channels"] == 8 and out["scenes_per_snr"] == 1 and set(out["per_snr"]) == {"-5", "5"}
    for r in out["per_snr"].values():
        assert 0 < r["occupied"] < r["cells"] and r["left_out"] >= 0
        for key in ("pd_model", "pd_energy", "pd_fused", "published_pd", "published_pfa"):
            assert 0.0 <= r[key] <= 1.0
        lo, hi = r["gain_model_ci"]          # one scene: every resample is that scene
        assert lo == pytest.approx(r["gain_model"]) and hi == pytest.approx(r["gain_model"])
    # Cells labelled by received power: at +5 dB in-band the detector finds nearly all.
    assert out["per_snr"]["5"]["pd_energy"] >= 0.9
    fusion = json.loads((model_dir / "adapters/sensing/adapter_config.json").read_text())["fusion"]
    assert {"w_model", "w_energy", "bias", "calibration"} <= set(fusion)
    assert fusion["w_energy"] > 0          # more energy, more likely occupied
    assert "fusion written to" in res.stderr


def test_bootstrap_gains_over_scenes():
    rng = np.random.default_rng(0)

    def scene(n=200):
        label = rng.integers(0, 2, n)
        energy = label + rng.normal(0, 1.0, n)
        return np.stack([label + rng.normal(0, 0.3, n), energy, energy, label], axis=1)

    scenes = [scene() for _ in range(8)]
    g = bootstrap_gains(scenes, n_boot=200)
    # The fused column is the detector's: no gain, a degenerate interval at 0.
    assert g["gain_fused"] == 0 and g["gain_fused_ci"] == [0.0, 0.0]
    # The model column is far cleaner: a clear gain whose interval excludes 0.
    lo, hi = g["gain_model_ci"]
    assert g["gain_model"] > 0.2 and 0 < lo <= g["gain_model"] <= hi
