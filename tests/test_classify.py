"""`spectrumfm classify` through the installed command, on generated recordings.

The model folders have random weights (tests/engine_fixtures.py): the tests check the
structure of the answer and where the emissions are, not what they are called.
"""

import json
import shutil

import pytest

from sfm_testutil import (BURST_HZ, BURST_S, SCENE_FREQ, SCENE_RATE, TONE_HZ, run_cli,
                          write_raw, write_sigmf)
from test_bad_input import assert_one_line_error

KEYS = {"path", "task", "label", "score", "samp_rate", "center_freq", "duration_s", "model",
        "emissions"}
EMISSION_KEYS = {"freq_lo", "freq_hi", "sample_start", "sample_count", "label", "score"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from engine_fixtures import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("models") / "spectrumfm-tiny",
                          tasks=("sensing", "technology", "modulation"))


def _result(res):
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert KEYS <= set(out), out.keys()
    for e in out["emissions"]:
        assert EMISSION_KEYS <= set(e), e.keys()
        assert 0.0 <= e["score"] <= 1.0 and e["freq_lo"] <= e["freq_hi"]
    return out


def _near(emissions, offset_hz, centre=SCENE_FREQ, tol=3e3):
    return [e for e in emissions if abs((e["freq_lo"] + e["freq_hi"]) / 2 - centre - offset_hz)
            < tol]


def test_sigmf_technology_finds_both_emitters(tmp_path, scene, model_dir):
    meta = write_sigmf(tmp_path / "scene", scene, "cf32_le")
    out = _result(run_cli("classify", meta, "--model", model_dir, "--device", "cpu", "--json",
                          cwd=tmp_path))
    assert out["task"] == "technology" and out["model"] == "spectrumfm-tiny/technology"
    assert out["samp_rate"] == SCENE_RATE and out["center_freq"] == SCENE_FREQ
    assert out["duration_s"] == pytest.approx(scene.size / SCENE_RATE)
    from engine_fixtures import task_classes
    classes = task_classes("technology")
    assert out["label"] in classes and all(e["label"] in classes for e in out["emissions"])
    # The steady carrier (in pieces of the history's length) and the burst, nothing else.
    tone, burst = _near(out["emissions"], TONE_HZ), _near(out["emissions"], BURST_HZ)
    assert len(tone) + len(burst) == len(out["emissions"]) and tone and len(burst) == 1
    assert sum(e["duration_s"] for e in tone) == pytest.approx(out["duration_s"], rel=0.05)
    assert burst[0]["time"] == pytest.approx(BURST_S[0], abs=0.005)
    assert burst[0]["duration_s"] == pytest.approx(BURST_S[1] - BURST_S[0], abs=0.01)


def test_raw_cu8_occupancy(tmp_path, scene, model_dir):
    path = write_raw(tmp_path / "scene.cu8", scene, "cu8")
    out = _result(run_cli("classify", path, "--samp-rate", SCENE_RATE, "--freq", SCENE_FREQ,
                          "--task", "occupancy", "--duration", "0.4", "--model", model_dir,
                          "--device", "cpu", "--json", cwd=tmp_path))
    assert out["task"] == "occupancy" and out["model"] == "spectrumfm-tiny/sensing"
    assert out["label"] in ("occupied", "vacant")
    assert out["center_freq"] == SCENE_FREQ and out["samp_rate"] == SCENE_RATE
    for e in out["emissions"]:                       # runs of occupied channel slots
        assert e["label"] == "occupied"
        assert e["freq_hi"] - e["freq_lo"] == pytest.approx(SCENE_RATE / 16)


def test_raw_ci8_modulation_duration(tmp_path, scene, model_dir):
    path = write_raw(tmp_path / "scene.ci8", scene, "ci8")
    out = _result(run_cli("classify", path, "-s", SCENE_RATE, "--task", "modulation",
                          "--duration", "0.25", "--model", model_dir, "--device", "cpu",
                          "--json", cwd=tmp_path))
    assert out["duration_s"] == pytest.approx(0.25) and out["center_freq"] == 0.0
    # Before the burst only the carrier, at its offset from an unknown (0 Hz) centre.
    assert out["emissions"] and all(_near([e], TONE_HZ, centre=0.0) for e in out["emissions"])


def test_bad_input(tmp_path, scene, model_dir):
    missing = tmp_path / "nope.sigmf-meta"
    assert_one_line_error(run_cli("classify", missing, "--model", model_dir), str(missing),
                          "no such file")
    raw = write_raw(tmp_path / "norate.cf32", scene[:4096], "cf32")
    assert_one_line_error(run_cli("classify", raw, "--model", model_dir), "norate.cf32",
                          "sample rate")
    res = run_cli("classify", raw, "-s", "1e6", "--task", "weather")
    assert_one_line_error(res, "--task")
    no_mod = tmp_path / "no-mod"
    shutil.copytree(model_dir, no_mod)
    shutil.rmtree(no_mod / "adapters" / "modulation")
    assert_one_line_error(run_cli("classify", raw, "-s", "1e6", "--task", "modulation",
                                  "--model", no_mod, "--device", "cpu"), "--task modulation",
                          "no adapter")
