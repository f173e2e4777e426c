"""LWM-Spectro in the inference engine: bundles, runners, band analysis, `spectrumfm classify`
and `spectrumfm run`.

The model folders have random weights (tests/engine_fixtures.py, make_lwm_model_dir: an
lwm-spectro-tiny backbone with hop 16, so 2,160 IQ samples per 128 x 128 image, and corpus
statistics -35 / 12 dB); the tests check what the engine feeds the model and what comes
back, not what the emissions are called.
"""

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine_fixtures import LWM_FEATURES, make_lwm_model_dir, task_classes
from sfm_testutil import BURST_HZ, SCENE_FREQ, SCENE_RATE, TONE_HZ, run_cli, write_raw
from spectrumfm.errors import InputError
from spectrumfm.infer.band import BandAnalyzer
from spectrumfm.infer.bundle import adapter_tasks, load_bundle
from spectrumfm.infer.worker import InferenceWorker, Job
from spectrumfm.models import LWMSpectro
from spectrumfm.schema import validate_decision
from spectrumfm.spectrogram import samples_for_frames, spectrogram_image
from spectrumfm.tasks import TaskModel
from spectrumfm.train.adapter_files import build_head, load_head_weights
from spectrumfm.train.checkpoint import load_pretrained
from test_bad_input import assert_one_line_error

MODEL = "lwm-test"
S = samples_for_frames(128, 128, LWM_FEATURES["hop"])     # 2160 IQ samples per image


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_lwm_model_dir(tmp_path_factory.mktemp("models") / MODEL)


@pytest.fixture(scope="module")
def bundle(model_dir):
    return load_bundle(str(model_dir), None, "cpu")


def _iq(batch, n=S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, dtype=torch.complex64, generator=g) * 0.05


def _reference(model_dir, task, mode):
    """The adapter's model rebuilt without the engine: probe the backbone itself, full the
    adapter's state dict, lora peft's unmerged wrapper."""
    adapter_dir = model_dir / "adapters" / task
    if mode == "lora":
        from spectrumfm.train.lora import load_adapter
        encoder, head, _ = load_adapter(adapter_dir, merged=False)
    else:
        encoder, _ = load_pretrained(model_dir)
        if mode == "full":
            encoder.load_state_dict(load_file(str(adapter_dir / "adapter.safetensors")))
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        head = load_head_weights(adapter_dir, build_head(adapter_dir, config, "cpu"), "cpu")
    return TaskModel(encoder, head, task).eval()


def test_001_bundle_loads_the_emission_adapters(bundle, model_dir):
    assert list(bundle.runners) == ["technology", "modulation"]
    assert bundle.name == MODEL and bundle.device == torch.device("cpu")
    assert bundle.window_len == 128          # the slots' framing; the runners take images
    assert bundle.describe() == (f"{MODEL} on cpu: technology (technology), "
                                 "modulation (modulation)")
    for task, runner in bundle.runners.items():
        assert runner.window_len == S == runner.input["window_len"]
        assert runner.name == f"{MODEL}/{task}" and runner.classes == task_classes(task)
        assert runner.positive is None and isinstance(runner.model.encoder, LWMSpectro)
        assert runner.input["features"] == "stft-db-corpus"
        assert runner.input["hop"] == LWM_FEATURES["hop"]
        assert runner.input["spec_mean"] == LWM_FEATURES["spec_mean"]
    assert bundle.runner("technology").input["samp_rate"] == 20e6
    assert bundle.runner("modulation").input["bandwidth_fraction"] == 0.25


def test_002_runners_give_probabilities_from_the_stored_features(bundle, model_dir):
    x = _iq(5)
    for task, runner in bundle.runners.items():
        p = runner(x)
        assert p.dtype == torch.float32 and p.shape == (5, len(runner.classes)), task
        assert torch.all(p >= 0) and torch.allclose(p.sum(-1), torch.ones(5), atol=1e-5)
        assert torch.allclose(runner(x[1:2]), p[1:2], atol=1e-5), task
        # The images are the backbone's: its hop and corpus statistics, not the defaults.
        ref = _reference(model_dir, task, "lora" if task == "technology" else "probe")
        images = spectrogram_image(x, LWM_FEATURES["spec_mean"], LWM_FEATURES["spec_std"],
                                   hop=LWM_FEATURES["hop"])
        with torch.no_grad():
            want = torch.softmax(ref(images), -1)
        torch.testing.assert_close(p, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=rf"expects \(B, {S}\)"):
        bundle.runner("technology")(torch.zeros(2, 128, dtype=torch.complex64))


@pytest.mark.parametrize("mode", ["probe", "lora", "full"])
def test_003_every_mode_loads_and_matches_its_unmerged_model(tmp_path, mode):
    folder = make_lwm_model_dir(tmp_path / MODEL, modes={"technology": mode}, seed=3)
    runner = load_bundle(str(folder), "technology", "cpu").runner("technology")
    x = _iq(3, seed=1)
    images = spectrogram_image(x, LWM_FEATURES["spec_mean"], LWM_FEATURES["spec_std"],
                               hop=LWM_FEATURES["hop"])
    with torch.no_grad():
        want = torch.softmax(_reference(folder, "technology", mode)(images), -1)
    torch.testing.assert_close(runner(x), want, atol=1e-5, rtol=0)


def test_004_loading_does_not_import_peft(model_dir):
    code = ("import sys; from spectrumfm.infer.bundle import load_bundle; "
            f"load_bundle({str(model_dir)!r}, None, 'cpu'); "
            "assert 'peft' not in sys.modules, 'peft imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr


def test_005_grid_tasks_are_refused_and_other_adapters_left_out(model_dir, tmp_path):
    with pytest.raises(InputError, match="spectrogram model .* technology and modulation only"):
        load_bundle(str(model_dir), "occupancy,technology", "cpu")
    folder = tmp_path / MODEL
    shutil.copytree(model_dir, folder)
    shutil.copytree(folder / "adapters" / "technology", folder / "adapters" / "sensing")
    assert adapter_tasks(folder) == ["modulation", "technology"]
    assert list(load_bundle(str(folder), None, "cpu").runners) == ["technology", "modulation"]
    for task in ("technology", "modulation"):
        shutil.rmtree(folder / "adapters" / task)
    with pytest.raises(InputError, match="no technology or modulation adapter"):
        load_bundle(str(folder), None, "cpu")


def test_006_an_adapter_trained_on_other_spectrograms_is_refused(model_dir, tmp_path):
    folder = tmp_path / MODEL
    shutil.copytree(model_dir, folder)
    path = folder / "adapters" / "modulation" / "adapter_config.json"
    config = json.loads(path.read_text())
    config["input"]["hop"] = 64
    path.write_text(json.dumps(config))
    with pytest.raises(InputError, match="hop 64.* backbone makes them with 16"):
        load_bundle(str(folder), "modulation", "cpu")


def test_007_band_analysis_of_a_scene_gives_lwm_decisions(bundle, scene):
    an = BandAnalyzer(bundle.runners, SCENE_RATE, SCENE_FREQ, window_len=bundle.window_len)
    jobs = []
    for i in range(0, scene.size, 50_000):
        jobs += an.process(scene[i:i + 50_000], i)
    jobs += an.flush()
    assert {j.task for j in jobs} == {"technology", "modulation"}
    decisions = {"technology": [], "modulation": []}
    for job in jobs:
        assert job.windows.dtype == np.complex64 and job.windows.shape[1] == S
        assert 1 <= len(job.windows) <= an.windows_per_emission
        runner = bundle.runner(job.task)
        probs = runner(torch.from_numpy(job.windows)).numpy()
        (d,) = an.decide(job, probs)
        validate_decision(d)
        assert d["model"] == runner.name and d["label"] in runner.classes
        decisions[job.task].append(d)
    tech = decisions["technology"]
    mids = [(d["freq_lo"] + d["freq_hi"]) / 2 - SCENE_FREQ for d in tech]
    assert any(abs(m - TONE_HZ) < 3e3 for m in mids) and any(abs(m - BURST_HZ) < 3e3
                                                             for m in mids)
    assert all(d["resampled_rate"] == pytest.approx(20e6, rel=1e-3) for d in tech)


class Fixed:
    """A runner of ``n``-sample inputs that returns each input's first sample (real part)
    and records the shapes of its batches."""

    def __init__(self, n):
        self.window_len, self.calls = n, []

    def __call__(self, x):
        self.calls.append(tuple(x.shape))
        return x[:, :1].real.clone()


def test_008_worker_batches_each_task_at_its_own_length(bundle):
    short, images = Fixed(128), Fixed(S)
    done, lock = {}, threading.Lock()

    def on_result(job, probs):
        with lock:
            done[job.context] = probs

    w = InferenceWorker({"grid": short, "emission": images}, on_result, device="cpu",
                        window_len=128, max_batch=4, max_latency_s=0.0)
    with pytest.raises(ValueError, match=rf"\(n >= 1, {S}\)"):
        w.submit(Job("emission", np.zeros((2, 128), np.complex64)))
    for k in range(3):
        assert w.submit(Job("grid", np.full((3, 128), k, np.complex64), context=("g", k)))
        assert w.submit(Job("emission", np.full((5, S), k, np.complex64), context=("e", k)))
    w.close(timeout=30)
    assert {s[1] for s in short.calls} == {128} and {s[1] for s in images.calls} == {S}
    for k in range(3):
        np.testing.assert_array_equal(done[("g", k)], np.full((3, 1), k, np.float32))
        np.testing.assert_array_equal(done[("e", k)], np.full((5, 1), k, np.float32))
    # And the real runners through the worker, as the flowgraph block drives them.
    got = {}
    w = InferenceWorker(bundle.runners, lambda job, p: got.__setitem__(job.task, p),
                        device="cpu", window_len=bundle.window_len, max_batch=8)
    for task in bundle.runners:
        assert w.submit(Job(task, _iq(3).numpy(), context=task))
    w.close(timeout=60)
    for task, runner in bundle.runners.items():
        np.testing.assert_allclose(got[task], runner(_iq(3)).numpy(), atol=1e-5)


def test_009_classify_runs_an_lwm_model_end_to_end(tmp_path, scene, model_dir):
    path = write_raw(tmp_path / "scene.cf32", scene, "cf32")
    res = run_cli("classify", path, "--samp-rate", SCENE_RATE, "--freq", SCENE_FREQ,
                  "--model", model_dir, "--task", "technology", "--device", "cpu", "--json",
                  cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["model"] == f"{MODEL}/technology" and out["task"] == "technology"
    classes = task_classes("technology")
    assert out["label"] in classes and out["emissions"]
    assert all(e["label"] in classes and 0.0 <= e["score"] <= 1.0 for e in out["emissions"])
    res = run_cli("classify", path, "--samp-rate", SCENE_RATE, "--model", model_dir,
                  "--task", "occupancy", "--device", "cpu", cwd=tmp_path,
                  env={"OMP_NUM_THREADS": "1"})
    assert_one_line_error(res, "--task occupancy", "spectrogram model")


def test_010_an_image_longer_than_its_burst_stays_inside_the_history(bundle):
    """A 20 ms burst 10 ms before the end of the stream: the modulation image (about 70 ms of
    the stream at its rate) centred on it would reach past the last sample into zeros; it is
    moved back so that every frame holds the stream (its power no lower at the end)."""
    from spectrumfm.spectrogram import spectrogram_db
    from spectrumfm.synth.scenes import Emitter, Scene, render

    scene = Scene(SCENE_RATE, SCENE_FREQ, 0.3, seed=2, emitters=[
        Emitter("modulation:qpsk", freq_hz=-60e3, snr_db=20.0, start_s=0.27, duration_s=0.02,
                params={"sps": 25, "rolloff": 0.35})])
    x = (render(scene)[0] * 0.01).astype(np.complex64)
    an = BandAnalyzer({"modulation": bundle.runner("modulation")}, SCENE_RATE, SCENE_FREQ,
                      window_len=bundle.window_len)
    (job,) = an.process(x, 0) + an.flush()
    box = job.context.box
    assert box["sample_count"] * job.context.rate / SCENE_RATE < S       # shorter than one image
    frames = spectrogram_db(torch.from_numpy(job.windows), hop=LWM_FEATURES["hop"]).mean(-1)
    assert job.windows.shape == (1, S)
    assert float(frames[0, -8:].mean()) > float(frames[0, :8].mean()) - 3.0


def test_011_run_replays_a_recording_with_an_lwm_model(tmp_path, scene, model_dir):
    path = write_raw(tmp_path / "scene.cf32", scene, "cf32")
    out = tmp_path / "decisions.jsonl"
    res = run_cli("run", path, "-s", SCENE_RATE, "-f", SCENE_FREQ, "--fast", "--headless",
                  "--model", model_dir, "--device", "cpu", "--decisions", out, cwd=tmp_path,
                  env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    decisions = [json.loads(line) for line in out.read_text().splitlines()]
    assert {d["task"] for d in decisions} == {"technology", "modulation"}
    for d in decisions:
        validate_decision(d)
        assert d["model"] == f"{MODEL}/{d['task']}" and d["label"] in task_classes(d["task"])


def test_012_long_inputs_count_for_their_samples_in_the_queue_bound():
    """A 1,280-sample input takes ten places of a bound counted in 128-sample windows: the
    bound caps the queue's memory and backlog, not just its number of inputs."""
    w = InferenceWorker({"t": Fixed(1280)}, lambda job, p: None, device="cpu", window_len=128,
                        max_batch=4, max_queue_windows=64, max_latency_s=0.0)
    jobs = [Job("t", np.zeros((2, 1280), np.complex64), context=k) for k in range(4)]
    assert [w.submit(j) for j in jobs] == [True, True, True, False]     # 20 places each
    w.close(timeout=30)
    stats = w.stats()
    assert stats["jobs_dropped"] == 1 and stats["windows_analyzed"] == 6
