"""`spectrumfm run` with a neural model: the inference engine end to end, through the
installed command, with a random-weight model folder laid out like a shipped one (the
decisions mean nothing; where they come from, their schema and the counters do)."""

import json

import pytest

from sfm_testutil import read_jsonl, run_cli
from spectrumfm.schema import validate_decision

RATE = 2e6
FREQ = 2.45e9
STATS_KEYS = {"samples_in", "windows_analyzed", "windows_dropped", "latency_p50_s",
              "latency_p95_s", "overflows", "model", "device"}
ADAPTER = {"occupancy": "sensing", "anomaly": "anomaly", "technology": "technology",
           "modulation": "modulation"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A folder of models: spectrumfm-tiny (every adapter) and sensing-only (one)."""
    from engine_fixtures import make_model_dir

    root = tmp_path_factory.mktemp("models")
    make_model_dir(root / "spectrumfm-tiny")
    make_model_dir(root / "sensing-only", tasks=("sensing",))
    return root


def write_scene(base, seconds):
    """A steady QPSK carrier 400 kHz above centre and a GMSK burst 500 kHz below it (from
    a third of the way in, for a third of the capture)."""
    from spectrumfm.synth.scenes import Emitter, Scene, write_sigmf

    scene = Scene(RATE, FREQ, seconds, seed=7, emitters=[
        Emitter("modulation:qpsk", freq_hz=400e3, snr_db=20.0, params={"sps": 8}),
        Emitter("modulation:gmsk", freq_hz=-500e3, snr_db=20.0, start_s=seconds / 3,
                duration_s=seconds / 3, params={"sps": 16})])
    return write_sigmf(scene, str(base))[1]


def run(*args, **kw):
    res = run_cli("run", *args, "--headless", **kw)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def test_fast_replay_decides_every_task_losslessly(tmp_path, models):
    meta = write_scene(tmp_path / "scene", 0.3)
    out, stats, rec = tmp_path / "d.jsonl", tmp_path / "s.json", tmp_path / "rec.sigmf-meta"
    res = run(meta, "--fast", "--model", models / "spectrumfm-tiny", "--device", "cpu",
              "--decisions", out, "--stats", stats, "--record", rec, timeout=300)
    assert res.returncode == 0, res.stderr
    decisions = read_jsonl(out)
    assert {d["task"] for d in decisions} == set(ADAPTER)
    for d in decisions:
        validate_decision(d)
        assert d["model"] == f"spectrumfm-tiny/{ADAPTER[d['task']]}"
        assert (d["samp_rate"], d["center_freq"]) == (RATE, FREQ)
    st = json.loads(stats.read_text())
    assert STATS_KEYS <= st.keys(), STATS_KEYS - st.keys()
    assert st["windows_dropped"] == 0 and st["windows_analyzed"] > 0
    assert st["samples_in"] == int(0.3 * RATE)
    assert st["model"] == "spectrumfm-tiny" and st["device"] == "cpu"
    assert st["decisions"] == len(decisions)
    # Occupancy: every slot of the stream, 16 channels each.
    occ = [d for d in decisions if d["task"] == "occupancy"]
    slots = sorted({d["sample_start"] for d in occ})
    assert len(occ) == 16 * len(slots) and len(slots) >= st["samples_in"] // occ[0]["sample_count"]

    from sigmf import sigmffile

    sf = sigmffile.fromfile(str(rec))
    sf.validate()
    annotations = sf.get_annotations()
    generators = {a["core:generator"] for a in annotations}
    assert generators and generators <= {f"spectrumfm-tiny/{a}" for a in ADAPTER.values()}
    assert "spectrumfm-tiny/technology" in generators
    assert "spectrumfm-tiny" in res.stdout and "0 dropped" in res.stdout


def test_default_model_and_tasks_come_from_the_search_path(tmp_path, models):
    # No --model: the shipped name spectrumfm-tiny, found through $SPECTRUMFM_MODELS; no
    # --tasks: the tasks it has adapters for.
    meta = write_scene(tmp_path / "scene", 0.2)
    out = tmp_path / "d.jsonl"
    res = run(meta, "--fast", "--device", "cpu", "--tasks", "occupancy", "--decisions", out,
              "-q", env={"SPECTRUMFM_MODELS": str(models)}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert {d["model"] for d in read_jsonl(out)} == {"spectrumfm-tiny/sensing"}
    out2 = tmp_path / "d2.jsonl"
    res = run(meta, "--fast", "--device", "cpu", "--model", "sensing-only", "--decisions", out2,
              "-q", env={"SPECTRUMFM_MODELS": str(models)}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert {d["task"] for d in read_jsonl(out2)} == {"occupancy"}


def test_realtime_with_a_tiny_queue_drops_and_counts(tmp_path, models):
    seconds = 2.0
    meta = write_scene(tmp_path / "long", seconds)
    stats = tmp_path / "s.json"
    res = run(meta, "--realtime", "--model", models / "spectrumfm-tiny", "--device", "cpu",
              "--tasks", "occupancy,anomaly", "--queue-windows", "16", "--stats", stats, "-q",
              timeout=300)
    assert res.returncode == 0, res.stderr
    st = json.loads(stats.read_text())
    assert st["samples_in"] == int(seconds * RATE)
    assert st["windows_dropped"] > 0 and st["windows_analyzed"] > 0
    # The source never waits for the model: the replay keeps real time.
    assert st["wall_s"] < 1.5 * seconds + 1.0, st["wall_s"]


def one_error_line(res, *words):
    assert res.returncode == 2, (res.returncode, res.stderr)
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, res.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])


def test_bad_model_inputs_are_one_line_errors(tmp_path, models):
    meta = write_scene(tmp_path / "scene", 0.05)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    one_error_line(run(meta, "--model", broken), "model.safetensors")
    one_error_line(run(meta, "--model", models / "sensing-only", "--tasks", "technology"),
                   "technology", "adapter")
    one_error_line(run(meta, "--model", models / "spectrumfm-tiny", "--tasks", "emission"),
                   "emission", "energy-detector")
    one_error_line(run(meta, "--model", "no-such-model"), "no-such-model")


def test_cuda_without_a_gpu_is_one_line_error(tmp_path, models):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    meta = write_scene(tmp_path / "scene", 0.05)
    one_error_line(run(meta, "--model", models / "spectrumfm-tiny", "--device", "cuda"),
                   "--device cuda")


def test_energy_detector_stays_available(tmp_path):
    meta = write_scene(tmp_path / "scene", 0.2)
    out = tmp_path / "d.jsonl"
    res = run(meta, "--fast", "--model", "energy-detector", "--decisions", out, "-q")
    assert res.returncode == 0, res.stderr
    assert {d["task"] for d in read_jsonl(out)} == {"occupancy", "emission"}


def test_ctrl_c_with_a_model_stops_cleanly(tmp_path, models):
    import signal
    import subprocess
    import time

    from sfm_testutil import SPECTRUMFM

    meta = write_scene(tmp_path / "long", 6.0)
    out, stats, rec = tmp_path / "d.jsonl", tmp_path / "s.json", tmp_path / "rec.sigmf-meta"
    proc = subprocess.Popen([str(SPECTRUMFM), "run", str(meta), "--headless", "-q", "--model",
                             str(models / "spectrumfm-tiny"), "--device", "cpu", "--decisions",
                             str(out), "--stats", str(stats), "--record", str(rec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:          # the model is loaded and the flowgraph about to start
        if "on cpu" in line:
            break
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "terminate" not in stderr
    st = json.loads(stats.read_text())
    assert 0 < st["samples_in"] < int(6.0 * RATE)
    assert out.exists() and st["windows_analyzed"] > 0
    from sigmf import sigmffile

    sigmffile.fromfile(str(rec)).validate()
