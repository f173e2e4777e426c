"""The inference engine's core: devices, model bundles and the batching worker.

Everything runs on the CPU with a random-weight model folder (tests/engine_fixtures.py) and,
for the worker's queueing behaviour, stand-in runners whose speed and failures the tests
control. Timing bounds are deliberately generous (a shared two-core machine); what is
asserted exactly is what does not depend on timing: which windows went to which job, how
many batches, what was dropped.
"""

import json
import logging
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from engine_fixtures import TASKS, make_model_dir, task_classes
from spectrumfm.errors import InputError
from spectrumfm.features import iq_features
from spectrumfm.infer import device as device_mod
from spectrumfm.infer.bundle import (ADAPTER_FOR, available_models, load_bundle,
                                     resolve_model)
from spectrumfm.infer.device import configure_cpu_threads, resolve_device
from spectrumfm.infer.merge import load_merged
from spectrumfm.infer.worker import InferenceWorker, Job
from spectrumfm.tasks import POSITIVE, TaskModel
from spectrumfm.train.checkpoint import load_pretrained
from spectrumfm.train.lora import load_adapter

N = 128
MODEL = "spectrumfm-test"


@pytest.fixture(autouse=True)
def one_thread():
    # One intra-op thread: on a shared two-core machine more threads stall behind other work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("models") / MODEL, tasks=TASKS, seed=0)


@pytest.fixture(scope="module")
def bundle(model_dir):
    return load_bundle(str(model_dir), None, "cpu")


def _copy(model_dir, tmp_path, keep=TASKS):
    out = tmp_path / MODEL
    shutil.copytree(model_dir, out)
    for task in set(TASKS) - set(keep):
        shutil.rmtree(out / "adapters" / task)
    return out


def _iq(batch, seed=0):
    return torch.randn(batch, N, dtype=torch.complex64,
                       generator=torch.Generator().manual_seed(seed))


# ---- bundle -------------------------------------------------------------------------------

def test_001_bundle_loads_every_task_with_its_classes(bundle, model_dir):
    assert list(bundle.runners) == ["occupancy", "anomaly", "technology", "modulation"]
    assert bundle.name == MODEL and bundle.path == model_dir and bundle.window_len == N
    assert bundle.device == torch.device("cpu")
    assert bundle.describe() == (f"{MODEL} on cpu: occupancy (sensing), anomaly (anomaly), "
                                 "technology (technology), modulation (modulation)")
    assert bundle.shared
    for task, runner in bundle.runners.items():
        assert runner.adapter_task == ADAPTER_FOR[task]
        assert runner.classes == task_classes(ADAPTER_FOR[task])
        assert runner.name == f"{MODEL}/{ADAPTER_FOR[task]}"
        assert runner.positive == (POSITIVE if task in ("occupancy", "anomaly") else None)
        assert runner.fusion is None
    assert bundle.runner("occupancy").classes[POSITIVE] == "occupied"
    assert bundle.runner("technology").input["samp_rate"] == 20e6
    assert bundle.runner("modulation").input == {"samp_rate": 1e6, "bandwidth_fraction": 0.25,
                                                 "window_len": N}
    assert len(bundle.runner("modulation").classes) == 24
    with pytest.raises(InputError, match="task modulationx: not loaded"):
        bundle.runner("modulationx")


def test_002_runners_give_probabilities(bundle):
    x = _iq(7)
    for task, runner in bundle.runners.items():
        p = runner(x)
        assert p.dtype == torch.float32 and p.shape == (7, len(runner.classes)), task
        assert torch.all(p >= 0) and torch.allclose(p.sum(-1), torch.ones(7), atol=1e-5), task
        # A row depends on its own window only: batching must not change a result.
        assert torch.allclose(runner(x[2:3]), p[2:3], atol=1e-5), task
    with pytest.raises(ValueError, match=r"expects \(B, 128\)"):
        bundle.runner("technology")(torch.zeros(3, 64, dtype=torch.complex64))


@pytest.mark.parametrize("task", ["technology", "anomaly"])
def test_003_merged_runner_equals_the_unmerged_lora_model(bundle, model_dir, task):
    model, head, _ = load_adapter(model_dir / "adapters" / ADAPTER_FOR[task], merged=False)
    reference = TaskModel(model, head, ADAPTER_FOR[task]).eval()
    x = _iq(16, seed=3)
    feats = iq_features(x)
    want = reference.probabilities(feats)
    got = bundle.runner(task)(x)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    # The adapter does change the output: the comparison above could have failed.
    with model.disable_adapter():
        plain = reference.probabilities(feats)
    assert (plain - want).abs().max() > 1e-4


def test_004_identical_adapters_share_one_backbone(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path, keep=("technology", "modulation"))
    # modulation's LoRA file replaced by technology's: same merged weights, own head.
    shutil.copy(folder / "adapters/technology/adapter.safetensors",
                folder / "adapters/modulation/adapter.safetensors")
    b = load_bundle(str(folder), "technology,modulation", "cpu")
    assert b.runner("technology").model.encoder is b.runner("modulation").model.encoder
    assert "technology and modulation" in b.shared
    assert b.runner("modulation")(_iq(2)).shape == (2, 24)


def test_005_models_by_name_from_the_search_path(model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("SPECTRUMFM_MODELS", str(model_dir.parent))
    assert MODEL in available_models()
    assert resolve_model(MODEL) == model_dir
    b = load_bundle(MODEL, ["sensing"], "cpu")      # the adapter's name is accepted too
    assert list(b.runners) == ["occupancy"]


@pytest.mark.parametrize("task", TASKS)
def test_006_fast_merge_equals_peft_merge(model_dir, task):
    adapter_dir = model_dir / "adapters" / task
    fast, fast_head, config = load_merged(adapter_dir)
    ref, ref_head, ref_config = load_adapter(adapter_dir, merged=True)
    assert config == ref_config and type(fast) is type(ref)
    got, want = fast.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-5, rtol=0), key
    # The LoRA update really is in there (the fixture's lora_B are not zero).
    base = load_pretrained(model_dir)[0].state_dict()
    key = "blocks.0.conv.pointwise1.weight"
    assert (got[key] - base[key]).abs().max() > 1e-4
    x = iq_features(_iq(8, seed=4))
    a = TaskModel(fast, fast_head, task).eval().probabilities(x)
    b = TaskModel(ref, ref_head, task).eval().probabilities(x)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_007_loading_a_bundle_imports_neither_peft_nor_transformers(model_dir):
    code = ("import sys; from spectrumfm.infer.bundle import load_bundle; "
            f"b = load_bundle({str(model_dir)!r}, None, 'cpu'); "
            "print(len(b.runners), sorted(m for m in ('peft', 'transformers') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["4", "[]"]


def test_008_fast_merge_refuses_what_peft_loading_refuses(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(model_dir, tmp_path, keep=("technology",))
    adapter_dir = folder / "adapters/technology"

    def same_error():
        with pytest.raises(InputError) as fast:
            load_merged(adapter_dir)
        with pytest.raises(InputError) as ref:
            load_adapter(adapter_dir)
        assert _one_line(fast) == _one_line(ref)
        return str(fast.value)

    lora = load_file(str(adapter_dir / "adapter.safetensors"))
    key = "base_model.model.blocks.1.attn.q_proj.lora_A.weight"
    bad = {k: v for k, v in lora.items() if k != key}
    bad["base_model.model.blocks.0.attn.q_proj.lora_B.weight"] = torch.zeros(64, 4)
    save_file(bad, str(adapter_dir / "adapter.safetensors"))
    msg = same_error()
    assert "does not fit the backbone: missing" in msg and "(64, 4) vs (64, 8)" in msg
    save_file(lora, str(adapter_dir / "adapter.safetensors"))

    (adapter_dir / "head.safetensors").unlink()
    assert same_error() == f"{adapter_dir / 'head.safetensors'}: missing"
    shutil.copy(model_dir / "adapters/technology/head.safetensors", adapter_dir)

    weights = load_file(str(folder / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first] + 1
    save_file(weights, str(folder / "model.safetensors"))
    assert "an adapter only fits the backbone it was trained on" in same_error()


# ---- bad input: one line naming the input ------------------------------------------------

def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_010_missing_weights(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path, keep=("technology",))
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError) as e:
        load_bundle(str(folder), ["technology"], "cpu")
    assert _one_line(e).startswith(f"--model {folder}: {folder / 'model.safetensors'} missing")


def test_011_missing_adapter_file(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path, keep=("technology",))
    (folder / "adapters/technology/head.safetensors").unlink()
    with pytest.raises(InputError) as e:
        load_bundle(str(folder), ["technology"], "cpu")
    assert _one_line(e) == f"{folder / 'adapters/technology/head.safetensors'}: missing"


def test_012_config_that_does_not_match_the_weights(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path, keep=("technology",))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_config"]["d_model"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError) as e:
        load_bundle(str(folder), ["technology"], "cpu")
    msg = _one_line(e)
    assert str(folder) in msg and "does not match its config" in msg and "96" in msg


def test_012b_adapter_features_recipe_is_used_and_checked(model_dir, tmp_path):
    """An adapter trained on level features gets them (its output changes with the level of
    the windows); an unknown recipe is one line naming the adapter's config."""
    folder = _copy(model_dir, tmp_path, keep=("sensing",))
    path = folder / "adapters/sensing/adapter_config.json"
    cfg = json.loads(path.read_text())
    iq = torch.randn(4, 128, dtype=torch.complex64)
    minmax = load_bundle(str(folder), ["occupancy"], "cpu").runner("occupancy")
    assert torch.allclose(minmax(iq), minmax(10 * iq), atol=1e-5)      # scale-free
    cfg["input"] = {**cfg.get("input", {}), "features": "amp-phase-level"}
    path.write_text(json.dumps(cfg))
    level = load_bundle(str(folder), ["occupancy"], "cpu").runner("occupancy")
    assert not torch.allclose(level(iq), level(10 * iq), atol=1e-3)
    cfg["input"]["features"] = "amp-phase-magic"
    path.write_text(json.dumps(cfg))
    with pytest.raises(InputError) as e:
        load_bundle(str(folder), ["occupancy"], "cpu")
    assert _one_line(e).startswith(f"{path}: unknown feature recipe 'amp-phase-magic'")


def test_013_task_without_adapter_and_unknown_task(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path, keep=("sensing", "technology"))
    with pytest.raises(InputError) as e:
        load_bundle(str(folder), ["technology", "modulation"], "cpu")
    assert _one_line(e) == (f"--tasks modulation: model {MODEL} has no adapter for it "
                            "(adapters: sensing, technology)")
    with pytest.raises(InputError, match="--tasks radar: unknown task; tasks: occupancy, "
                                         "anomaly, technology, modulation"):
        load_bundle(str(folder), "technology,radar", "cpu")
    # No tasks given: every task with an adapter.
    assert list(load_bundle(str(folder), None, "cpu").runners) == ["occupancy", "technology"]


def test_014_unknown_model_lists_the_shipped_ones(monkeypatch, tmp_path):
    for name in ("beta", "alpha"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "not-a-model").mkdir()
    monkeypatch.setenv("SPECTRUMFM_MODELS", str(tmp_path))
    # An application run in-process earlier in the session (evaluate, classify...) registers
    # the installed models folder; this test lists only the folder it made.
    from spectrumfm.infer import bundle
    monkeypatch.setattr(bundle, "_search_dirs", [])
    with pytest.raises(InputError) as e:
        load_bundle("spectrumfm-huge", None, "cpu")
    assert _one_line(e) == ("--model spectrumfm-huge: no such model folder and no shipped model "
                            "of that name; shipped models: alpha, beta")
    with pytest.raises(InputError, match="alpha/model.safetensors missing"):
        resolve_model("alpha")


def test_015_devices(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError) as e:
        resolve_device("cuda")
    assert _one_line(e) == ("--device cuda: no CUDA GPU is available here (PyTorch sees none); "
                            "use --device cpu or auto")
    with pytest.raises(InputError, match="--device cuda:1: no CUDA GPU"):
        load_bundle("/nonexistent-model", None, "cuda:1")   # the device is checked first
    with caplog.at_level(logging.INFO, logger="spectrumfm"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "no CUDA GPU: running on the CPU" in caplog.text
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(InputError, match="--device tpu: unknown device"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match=r"--device cuda:3: only 1 CUDA GPU here \(cuda:0"):
        resolve_device("cuda:3")
    assert resolve_device("cuda") == torch.device("cuda", 0)


def test_016_cpu_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert configure_cpu_threads() == 3 and torch.get_num_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(device_mod, "cpu_count", lambda: 8)
    assert configure_cpu_threads() == 7
    monkeypatch.setattr(device_mod, "cpu_count", lambda: 1)
    assert configure_cpu_threads() == 1


# ---- worker --------------------------------------------------------------------------------

class IdRunner:
    """Returns each window's first sample's real part as its only "probability", so the tests
    can tell which window ended up in which job's result; records the batch sizes."""

    def __init__(self, delay=0.0, fail_below=None):
        self.delay, self.fail_below, self.sizes = delay, fail_below, []

    def __call__(self, x):
        self.sizes.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        first = x[:, 0].real
        if self.fail_below is not None and bool((first < self.fail_below).any()):
            raise RuntimeError("bad window")
        return first[:, None].clone()


def _windows(ids):
    w = np.zeros((len(ids), N), np.complex64)
    w[:, 0] = ids
    return w


class Results:
    def __init__(self):
        self.items, self.times, self.event = [], [], threading.Event()

    def __call__(self, job, probs):
        self.items.append((job, probs.copy()))
        self.times.append(time.monotonic())
        self.event.set()


def test_020_batches_by_size_and_reassembles_split_jobs():
    runner, res = IdRunner(), Results()
    w = InferenceWorker({"t": runner}, res, device="cpu", max_batch=16, max_latency_s=30.0)
    for k in range(64):           # queued before start: the thread sees full batches
        assert w.submit(Job("t", _windows([k]), context=k))
    assert w.submit(Job("t", _windows(np.arange(100, 140)), context="big"))
    w.close(timeout=30)
    # 64 single windows: 4 full batches; then 40 windows: 16 + 16 + 8 (the 8 sent at close).
    assert runner.sizes == [16, 16, 16, 16, 16, 16, 8]
    assert [j.context for j, _ in res.items] == list(range(64)) + ["big"]
    for job, probs in res.items:
        assert probs.shape == (len(job.windows), 1)
        np.testing.assert_array_equal(probs[:, 0], job.windows[:, 0].real)
    s = w.stats()
    assert s["batches"] == 7 and s["mean_batch"] == pytest.approx(104 / 7)
    assert s["windows_in"] == s["windows_analyzed"] == 104 and s["queue_windows"] == 0


def test_021_batches_by_deadline():
    runner, res = IdRunner(), Results()
    w = InferenceWorker({"t": runner}, res, device="cpu", max_batch=256, max_latency_s=0.05)
    w.start()
    job = Job("t", _windows([1.0]))
    assert w.submit(job)
    assert res.event.wait(5.0), "a lone job was never answered"
    latency = res.times[0] - job.t_arrival
    # Not full: it waits for the deadline (this bound is exact), then is answered promptly.
    assert 0.05 <= latency < 0.05 + 1.0
    # Jobs within one deadline go in one batch.
    w2 = InferenceWorker({"t": IdRunner()}, Results(), device="cpu", max_batch=256,
                         max_latency_s=1.0)
    w2.start()
    for k in range(10):
        w2.submit(Job("t", _windows([k, k])))
    w2.close(timeout=30)
    w.close(timeout=30)
    assert w2.stats()["batches"] == 1 and w2.stats()["mean_batch"] == 20
    assert w.stats()["batches"] == 1


def test_021b_an_overdue_task_is_not_starved_by_full_batches():
    runner, res = IdRunner(), Results()
    w = InferenceWorker({"a": runner, "b": runner}, res, device="cpu", max_batch=4,
                        max_latency_s=0.5)
    for k in range(5):
        w.submit(Job("a", _windows([k] * 4), context=f"a{k}"))
    w.submit(Job("b", _windows([9]), context="b", t_arrival=time.monotonic() - 1.0))
    w.close(timeout=30)
    assert runner.sizes == [1, 4, 4, 4, 4, 4]
    assert [j.context for j, _ in res.items] == ["b", "a0", "a1", "a2", "a3", "a4"]


def test_022_drops_whole_jobs_when_full_and_never_blocks():
    runner, res = IdRunner(delay=0.2), Results()
    w = InferenceWorker({"t": runner}, res, device="cpu", max_batch=8, max_latency_s=0.0,
                        max_queue_windows=32)
    w.start()
    accepted, worst = [], 0.0
    for k in range(50):
        t0 = time.monotonic()
        ok = w.submit(Job("t", _windows([k] * 4), context=k))
        worst = max(worst, time.monotonic() - t0)
        if ok:
            accepted.append(k)
    s = w.stats()
    # 50 jobs in well under one 0.2 s batch: most are dropped, none waited for room.
    assert worst < 0.1
    assert 0 < s["jobs_dropped"] < 50 and len(accepted) == 50 - s["jobs_dropped"]
    assert s["windows_dropped"] == 4 * s["jobs_dropped"] and s["windows_in"] == 200
    assert s["queue_windows"] <= 32
    w.close(timeout=30)
    assert sorted(j.context for j, _ in res.items) == accepted
    assert all(p.shape == (4, 1) for _, p in res.items)      # whole jobs only
    assert w.stats()["windows_analyzed"] == 4 * len(accepted)


def test_022b_a_slow_task_drops_its_own_jobs_not_the_others():
    """Dropping, each task keeps to its share of the queue (half each here): a task that
    falls behind (anomaly's seven passes a window) drops its own jobs once its share is full
    and leaves room for the others. The worker is not started, so nothing leaves the queue."""
    res = Results()
    w = InferenceWorker({"slow": IdRunner(), "fast": IdRunner()}, res, device="cpu",
                        max_batch=8, max_latency_s=0.0, max_queue_windows=32)
    slow_ok = [w.submit(Job("slow", _windows([k] * 4), context=k)) for k in range(10)]
    assert sum(slow_ok) == 4                     # 16 windows: its share
    fast_ok = [w.submit(Job("fast", _windows([k] * 4), context=k)) for k in range(10)]
    assert sum(fast_ok) == 4                     # the other half is still there
    assert w.stats()["queue_windows"] == 32 and w.stats()["jobs_dropped"] == 12
    w.close(timeout=30)
    assert len(res.items) == 8
    # Lossless keeps one shared queue: a task may fill all of it (the submitter waits).
    lossless = InferenceWorker({"slow": IdRunner(), "fast": IdRunner()}, Results(),
                               device="cpu", max_batch=8, max_latency_s=0.0,
                               max_queue_windows=32, lossless=True)
    assert all(lossless.submit(Job("slow", _windows([k] * 4))) for k in range(8))
    lossless.close(timeout=30)


def test_023_lossless_loses_nothing_and_blocks_the_submitter():
    runner, res = IdRunner(delay=0.05), Results()
    w = InferenceWorker({"t": runner}, res, device="cpu", max_batch=4, max_latency_s=0.0,
                        max_queue_windows=8, lossless=True)
    w.start()
    t0 = time.monotonic()
    assert all(w.submit(Job("t", _windows([k] * 4), context=k)) for k in range(20))
    waited = time.monotonic() - t0
    # 20 batches of 0.05 s, at most 2 jobs queued: the submitter waited for most of them.
    assert waited >= 0.05 * (20 - 4)
    w.close(timeout=30)
    s = w.stats()
    assert [j.context for j, _ in res.items] == list(range(20))
    assert s["windows_dropped"] == s["jobs_dropped"] == 0 and s["windows_analyzed"] == 80


def test_024_a_failing_runner_or_callback_is_counted_and_the_thread_survives(caplog):
    runner = IdRunner(fail_below=0)

    def on_result(job, probs):
        if job.context == "boom":
            raise KeyError("callback")
        res(job, probs)

    res = Results()
    w = InferenceWorker({"t": runner}, on_result, device="cpu", max_batch=4,
                        max_latency_s=0.0)
    with caplog.at_level(logging.ERROR, logger="spectrumfm"):
        w.start()
        for k, ids in enumerate([[1], [-1], [2], [-2, 3, 4, 5, 6, 7], [8]]):
            w.submit(Job("t", _windows(ids), context=k))
            time.sleep(0.02)
        w.submit(Job("t", _windows([9]), context="boom"))
        w.submit(Job("t", _windows([10]), context="last"))
        w.close(timeout=30)
    s = w.stats()
    assert [j.context for j, _ in res.items] == [0, 2, 4, "last"]
    # Two failed batches (the second job split: its later windows are not run either) and
    # one failed callback; one log line per kind of failure.
    assert s["errors"] == 3
    assert s["windows_failed"] == 1 + 6
    assert len([r for r in caplog.records if "RuntimeError" in r.getMessage()]) == 1
    assert len([r for r in caplog.records if "KeyError" in r.getMessage()]) == 1


def test_025_close_drains_and_later_submits_are_refused():
    runner, res = IdRunner(delay=0.01), Results()
    w = InferenceWorker({"a": runner, "b": runner}, res, device="cpu", max_batch=64,
                        max_latency_s=30.0)
    w.start()
    for k in range(10):
        w.submit(Job("ab"[k % 2], _windows([k]), context=k))
    w.close(timeout=30)
    assert not w.alive
    assert sorted(j.context for j, _ in res.items) == list(range(10))
    assert w.stats()["queue_windows"] == 0
    assert not w.submit(Job("a", _windows([0])))
    assert w.stats()["jobs_dropped"] == 1
    with pytest.raises(ValueError, match="no runner for task 'c'"):
        w.submit(Job("c", _windows([0])))
    with pytest.raises(ValueError, match=r"must be \(n >= 1, 128\)"):
        w.submit(Job("a", np.zeros((0, N), np.complex64)))


def test_026_stats_and_real_runners(bundle):
    results = {}
    w = InferenceWorker(bundle.runners, lambda job, p: results.__setitem__(job.context, p),
                        device=bundle.device, max_batch=32, max_latency_s=0.01)
    w.start()
    x = _iq(40, seed=5).numpy()
    for task in bundle.runners:
        w.submit(Job(task, x, context=task))
    w.close(timeout=120)
    for task, runner in bundle.runners.items():
        want = runner(torch.from_numpy(x)).numpy()
        assert results[task].shape == want.shape
        np.testing.assert_allclose(results[task], want, atol=1e-5)
    s = w.stats()
    keys = {"windows_in", "windows_analyzed", "windows_dropped", "jobs_dropped",
            "queue_windows", "max_queue_windows", "latency_p50_s", "latency_p95_s",
            "windows_per_s", "batches", "mean_batch", "device", "memory_bytes", "errors"}
    assert keys <= set(s)
    assert 0 < s["latency_p50_s"] <= s["latency_p95_s"] < 120
    assert s["windows_analyzed"] == 160 and s["batches"] == 8 and s["errors"] == 0
    assert s["device"] == "cpu" and s["memory_bytes"] > 10 << 20 and s["windows_per_s"] >= 0


# ---- spectrumfm benchmark --pipeline -------------------------------------------------------

def test_030_benchmark_pipeline_json(model_dir, capsys):
    from spectrumfm_apps import benchmark

    args = benchmark.get_args_parser().parse_args(
        ["--pipeline", "--model", str(model_dir), "--tasks", "occupancy", "--device", "cpu",
         "--batch", "8", "--seconds", "0.2", "--warmup", "0", "--threads", "1", "--json"])
    assert benchmark.main(args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["pipeline"] is True and res["model"] == MODEL and res["batch"] == 8
    occ = res["tasks"]["occupancy"]
    assert list(res["tasks"]) == ["occupancy"] and occ["errors"] == 0
    assert occ["bare_windows_per_s"] > 0 and occ["worker_windows_per_s"] > 0
    assert occ["overhead_pct"] == pytest.approx(
        100 * (1 - occ["worker_windows_per_s"] / occ["bare_windows_per_s"]), abs=0.2)
    assert 0 < occ["mean_batch"] <= 8 and occ["latency_p50_s"] > 0
    # The band analysis at an RTL-SDR's and a USRP's rate, live and lossless.
    assert list(res["band"]) == ["2.4e6", "20e6"]
    for key, rate in (("2.4e6", 2.4e6), ("20e6", 20e6)):
        band = res["band"][key]
        assert band["samp_rate"] == rate and band["chunk"] == 65536
        for mode in ("live", "lossless"):
            m = band[mode]
            assert m["real_time_factor"] > 0 and m["signal_s"] > 0 and m["errors"] == 0
            assert m["windows_submitted"] == m["windows_analyzed"] + m["windows_dropped"]
            assert m["share_analyzed"] == pytest.approx(
                m["windows_analyzed"] / m["windows_submitted"], abs=1e-4)
            assert list(m["tasks"]) == ["occupancy"]
            assert m["tasks"]["occupancy"]["windows"] == m["windows_submitted"]
            assert m["tasks"]["occupancy"]["decisions"] == m["windows_analyzed"]  # 1 / cell
        assert band["lossless"]["windows_dropped"] == 0
        assert band["lossless"]["share_analyzed"] == 1.0
