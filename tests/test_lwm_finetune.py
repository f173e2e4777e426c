"""LWM-Spectro fine-tuning in its three modes and `spectrumfm evaluate` of its adapters.

One tiny masked-stage backbone (lwm-spectro-tiny, one epoch at hop 7 on 1,024-sample
generated modulation examples) is shared by every test; the commands run in-process through
their ``get_args_parser()`` + ``main(args)`` for one epoch each, the modulation adapters of
the three modes once per module.
"""

import json
import re

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

from sfm_testutil import run_cli
from spectrumfm.errors import InputError
from spectrumfm.models import LWMSpectro, create_model
from spectrumfm.tasks import PatchReconstructionAnomalyHead, TaskModel, build_head, predict
from spectrumfm.train import DistContext, TrainConfig, fit, load_pretrained, save_pretrained
from spectrumfm.train.lora import backbone_sha256
from spectrumfm.train.lwm_finetune import (load_lwm_adapter, open_task_examples,
                                           prepare_encoder, save_lwm_adapter, source_opener)
from spectrumfm_apps import evaluate, finetune, pretrain

HOP, SAMPLES = 7, 127 * 7 + 128
MODES = ("probe", "lora", "full")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(module, *argv):
    return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "gen"
    res = run_cli("generate", "--family", "modulation", "--classes", "bpsk,qpsk,16qam",
                  "--n-per-class", 24, "--snr-db", 10, "--workers", 1, "--out", out, "-q")
    assert res.returncode == 0, res.stderr
    return f"shards:{out}"


@pytest.fixture(scope="module")
def backbone(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "s1"
    assert _run(pretrain, "--model", "lwm-spectro-tiny", "--data", shards, "--out", out,
                "--epochs", 1, "--batch", 16, "--device", "cpu", "--no-progress") == 0
    return out


@pytest.fixture(scope="module")
def adapters(shards, backbone, tmp_path_factory):
    """A modulation adapter of every mode, one epoch each."""
    root = tmp_path_factory.mktemp("adapters")
    for mode in MODES:
        assert _run(finetune, "--task", "modulation", "--backbone", backbone, "--data", shards,
                    "--mode", mode, "--epochs", 1, "--batch", 16, "--out", root / mode,
                    "--device", "cpu", "--no-progress") == 0
    return {mode: root / mode for mode in MODES}


def _anomaly_shards(folder, n_per_class=12, seed=0):
    """Normal examples (a tone in noise) and jammed ones (the tone plus a loud chirp)."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    labels = np.repeat([0, 1], n_per_class)
    t = np.arange(1024)
    iq = 3 * np.exp(2j * np.pi * (0.1 * t + rng.random((len(labels), 1))))
    iq += (labels[:, None] == 1) * 10 * np.exp(1j * np.pi * 0.8 * t ** 2 / 1024)
    iq += (rng.normal(size=iq.shape) + 1j * rng.normal(size=iq.shape)) / np.sqrt(2)
    with h5py.File(folder / "shard-000.h5", "w") as f:
        f["iq"] = iq.astype(np.complex64)
        f["label"] = labels.astype(np.int64)
        f["snr_db"] = np.full(len(labels), 10.0, np.float32)
        f.attrs["classes"] = json.dumps(["normal", "jammed"])
        f.attrs["samp_rate"] = 1e6
    (folder / "dataset.json").write_text(json.dumps({"classes": ["normal", "jammed"]}))
    return f"shards:{folder}"


@pytest.mark.parametrize("mode", MODES)
def test_001_frozen_parts_stay_bit_identical_and_the_adapter_round_trips(
        backbone, shards, tmp_path, mode):
    model, _ = load_pretrained(backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    encoder = prepare_encoder(model, mode, "modulation")
    task_model = TaskModel(encoder, build_head("modulation", 64, 3, kind="rescnn"), "modulation")
    data = open_task_examples(shards, model.config, "modulation")
    iq, labels, _ = data.batch(np.arange(0, 72, 9))
    batches = TensorDataset(torch.from_numpy(iq), torch.from_numpy(labels))
    # The engine's real path, weight decay included: decay on a frozen weight would move it.
    fit(task_model, lambda m, b, g: m.loss(model.features(b[0]), b[1]), batches, batches,
        TrainConfig(epochs=1, batch_size=8, warmup_steps=0, lr=1e-2, progress=False),
        out_dir=tmp_path / "run", ctx=DistContext())
    after = model.state_dict()
    if mode == "lora":
        after = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora_" not in k}
        assert any("lora_B" in n and p.abs().sum() > 0 for n, p in encoder.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if mode == "full":
        assert {k for k in changed if k.startswith("encoder.")} == \
            {k for k in before if k.startswith("encoder.")}
        assert not changed & {k for k in before if k.startswith(("proj.", "decoder."))}
    else:
        assert not changed, changed
    bdir = str(backbone)
    out = save_lwm_adapter(tmp_path / "ad", mode, encoder, task_model.head, task="modulation",
                           classes=data.classes, backbone_dir=bdir,
                           backbone_sha256=backbone_sha256(bdir),
                           extra={"input": {"features": "stft-db-corpus"}})
    loaded, head, config = load_lwm_adapter(out)
    assert config["mode"] == mode and isinstance(loaded, LWMSpectro)
    assert not any(p.requires_grad for p in loaded.parameters())
    idx = np.arange(len(data))
    want = predict(task_model, data, idx, batch_size=32, features=model.features)
    got = predict(TaskModel(loaded, head, "modulation"), data, idx, batch_size=32,
                  features=loaded.features)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_002_adapter_folders_have_spectrumfms_files_and_layout(adapters, backbone):
    state = load_file(str(backbone / "model.safetensors"))
    for mode, folder in adapters.items():
        assert {p.name for p in folder.iterdir()} == {
            "adapter.safetensors", "head.safetensors", "adapter_config.json", "run_config.json"}
        cfg = json.loads((folder / "adapter_config.json").read_text())
        assert cfg["format"] == "spectrumfm-lora/1" and cfg["mode"] == mode
        assert cfg["task"] == "modulation" and cfg["classes"] == ["bpsk", "qpsk", "16qam"]
        assert cfg["backbone"]["sha256"] == backbone_sha256(backbone)
        assert (folder / cfg["backbone"]["relative_path"]).resolve() == backbone.resolve()
        assert cfg["backbone_arch"] == "lwm-spectro-tiny" and cfg["head"]["type"] == "rescnn"
        assert cfg["input"]["features"] == "stft-db-corpus" and cfg["input"]["hop"] == HOP
        assert cfg["input"]["image"] == [128, 128] and cfg["input"]["window_len"] == SAMPLES
        assert cfg["status"] == "finished" and cfg["train"]["mode"] == mode
        tensors = load_file(str(folder / "adapter.safetensors"))
        if mode == "probe":
            assert tensors == {} and cfg["lora"] is None
        elif mode == "full":
            assert set(tensors) == set(state) and cfg["lora"] is None
            assert not torch.equal(tensors["encoder.blocks.0.fc1.weight"],
                                   state["encoder.blocks.0.fc1.weight"])
        else:
            assert tensors and all("lora_A" in k or "lora_B" in k for k in tensors)
            assert cfg["lora"]["targets"] == ["q_proj", "k_proj", "v_proj", "out_proj", "fc1",
                                              "fc2"]


@pytest.mark.parametrize("mode", MODES)
def test_003_evaluate_scores_the_adapters_own_probabilities(adapters, shards, capsys, mode):
    assert _run(evaluate, "--model", adapters[mode], "--data", shards, "--json",
                "--device", "cpu") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, head, config = load_lwm_adapter(adapters[mode])
    data = open_task_examples(shards, model.config, "modulation")
    _, _, test = finetune.task_split(shards, data, window_len=None, fractions=(0.8, 0.1, 0.1),
                                     seed=0, open_source=source_opener(shards, model.config))
    probs = predict(TaskModel(model, head, "modulation"), data, test, features=model.features)
    want = evaluate._finite(evaluate.evaluate(probs, data.labels[test], data.snr_db[test],
                                              config["classes"], "modulation"))
    assert res["n"] == len(test) > 0 and res["split"] == "test"
    assert {k: res[k] for k in want} == want


def test_004_sensing_and_anomaly(backbone, shards, tmp_path, capsys):
    out = tmp_path / "sensing"
    assert _run(finetune, "--task", "sensing", "--backbone", backbone, "--data", shards,
                "--mode", "probe", "--epochs", 1, "--batch", 32, "--out", out,
                "--device", "cpu", "--no-progress") == 0
    assert _run(evaluate, "--model", out, "--data", shards, "--json") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(res["per_class"]) == ["vacant", "occupied"]
    assert 0 <= res["roc_auc"] <= 1 and 0 <= res["pd_at_pfa"] <= 1

    spec = _anomaly_shards(tmp_path / "anom")
    out = tmp_path / "anomaly"
    assert _run(finetune, "--task", "anomaly", "--backbone", backbone, "--data", spec,
                "--mode", "probe", "--epochs", 1, "--out", out, "--device", "cpu",
                "--no-progress") == 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["head"]["type"] == "patch-reconstruction" and cfg["train"]["epochs"] == 0
    assert "calibration" in cfg["val"]
    assert _run(evaluate, "--model", out, "--data", spec, "--json", "--split", "all") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(res["per_class"]) == ["normal", "anomalous"] and res["n"] == 24
    # A loud chirp is far from anything the backbone learned to fill in.
    assert res["roc_auc"] > 0.9


def test_005_anomaly_score_is_deterministic_and_covers_every_patch(backbone):
    model, _ = load_pretrained(backbone)
    head = PatchReconstructionAnomalyHead(model.config.n_tokens, model.config.mask_ratio)
    assert head.n_masks == 2 and head.masks.any(0).all()
    assert (head.masks.sum(1) == model.config.n_masked).all()
    images = torch.randn(3, 128, 128)
    with torch.no_grad():
        batch = head.raw_score(model, images)
        one = torch.cat([head.raw_score(model, images[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, one)


def test_006_lora_anomaly_trains_on_normal_examples_only(backbone, tmp_path, capsys):
    spec = _anomaly_shards(tmp_path / "anom")
    out = tmp_path / "anomaly"
    assert _run(finetune, "--task", "anomaly", "--backbone", backbone, "--data", spec,
                "--epochs", 1, "--out", out, "--device", "cpu", "--no-progress") == 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["mode"] == "lora" and cfg["train"]["epochs"] == 1
    assert _run(evaluate, "--model", out, "--data", spec, "--json") == 0


def test_007_bad_input_is_one_line(backbone, shards, adapters, tmp_path):
    common = ["--task", "modulation", "--data", shards, "--epochs", 1, "--device", "cpu"]
    cases = [
        ((finetune, "--backbone", backbone, *common, "--out", tmp_path / "a", "--targets",
          "pointwise1"), "unknown LoRA targets ['pointwise1'] for LWM-Spectro"),
        ((finetune, "--backbone", backbone, *common, "--out", tmp_path / "b", "--features",
          "amp-phase-level"), "--features amp-phase-level: an LWM-Spectro backbone reads"),
        ((evaluate, "--model", tmp_path, "--data", shards), "adapter_config.json: missing"),
    ]
    sfm = save_pretrained(tmp_path / "sfm", create_model("spectrumfm-tiny"),
                          arch="spectrumfm-tiny")
    cases.append(((finetune, "--backbone", sfm, *common, "--out", tmp_path / "d", "--mode",
                   "probe"), "--mode probe: SpectrumFM backbones fine-tune with LoRA only"))
    short = tmp_path / "short"
    short.mkdir()
    with h5py.File(short / "shard-000.h5", "w") as f:
        f["iq"] = np.ones((4, 512), np.complex64)
        f["label"] = np.zeros(4, np.int64)
        f["snr_db"] = np.zeros(4, np.float32)
        f.attrs["classes"] = json.dumps(["bpsk"])
    (short / "dataset.json").write_text(json.dumps({"classes": ["bpsk"]}))
    cases.append(((finetune, "--backbone", backbone, "--task", "modulation", "--data",
                   f"shards:{short}", "--out", tmp_path / "c"),
                  f"examples of 512 samples are too short for one 128 x 128 spectrogram "
                  f"({SAMPLES} samples at hop {HOP})"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("adapter_config.json", "head.safetensors"):
        (broken / name).write_bytes((adapters["full"] / name).read_bytes())
    tensors = load_file(str(adapters["full"] / "adapter.safetensors"))
    tensors.pop("encoder.norm.weight")
    save_file(tensors, str(broken / "adapter.safetensors"))
    cases.append(((evaluate, "--model", broken, "--data", shards),
                  "does not fit a full-mode adapter of its backbone: missing"))
    for (module, *argv), expect in cases:
        with pytest.raises(InputError, match=re.escape(expect)) as exc:
            _run(module, *argv)
        assert "\n" not in str(exc.value)
    assert not any((tmp_path / d).exists() for d in "abcd")
