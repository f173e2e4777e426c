"""LoRA fine-tuning, task heads, adapters, metrics and the finetune / evaluate / benchmark
commands.

Tiny models on the CPU throughout; the paper-size checks build the model on the meta
device (shapes only, no memory). The commands run in-process through their
``get_args_parser()`` + ``main(args)``, on HDF5 shards this file writes.
"""

import json

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

from spectrumfm.errors import InputError
from spectrumfm.features import iq_features
from spectrumfm.models import create_model
from spectrumfm.models.reference import ReferenceEncoder
from spectrumfm.tasks import ReconstructionAnomalyHead, TaskModel, build_head, fit_logistic
from spectrumfm.train import DistContext, TrainConfig, fit, load_pretrained, save_pretrained
from spectrumfm.train.lora import (ADAPTER_FILE, HEAD_FILE, apply_lora, backbone_sha256,
                                   load_adapter, merge, save_adapter, trainable_share)
from spectrumfm_apps import benchmark, evaluate, finetune

N = 128


@pytest.fixture(autouse=True)
def one_thread():
    # One thread: on a shared two-core machine two threads stall behind other processes
    # (a tiny step then takes seconds instead of milliseconds).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _iq(batch, seed=0, n=N):
    return torch.randn(batch, n, dtype=torch.complex64,
                       generator=torch.Generator().manual_seed(seed))


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return create_model("spectrumfm-tiny", dropout=0.0, **kw)


def _perturb_lora(model, seed=1, std=0.05):
    # lora_B starts at zero (the adapted model equals the backbone): give it values, so that
    # merging and saving have something to get wrong.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _backbone_dir(tmp_path, seed=0, name="backbone"):
    return save_pretrained(tmp_path / name, _tiny(seed), arch="spectrumfm-tiny")


# ---- LoRA -------------------------------------------------------------------------------

def test_001_lora_freezes_the_backbone_through_a_finetune_step(tmp_path):
    model = apply_lora(_tiny())
    task_model = TaskModel(model, build_head("modulation", 64, 3), "modulation")
    before = {k: v.clone() for k, v in task_model.state_dict().items()}
    trainable = [n for n, p in task_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    data = TensorDataset(_iq(16), torch.arange(16) % 3)
    # The real training path, weight decay included: decay applied to a frozen weight
    # would change it even with a zero gradient.
    fit(task_model, lambda m, b, g: m.loss(iq_features(b[0]), b[1], generator=g), data, data,
        TrainConfig(epochs=1, batch_size=8, warmup_steps=1, progress=False),
        out_dir=tmp_path, ctx=DistContext())
    after = task_model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = [k for k in before if "lora_" not in k and not k.startswith("head.")]
    assert not changed & set(frozen), "backbone weights moved"
    assert {k for k in changed if "lora_B" in k} == {k for k in before if "lora_B" in k}
    assert any(k.startswith("head.") for k in changed)


def test_002_trainable_share_at_paper_size():
    """The paper says LoRA tunes "only 2 %" of the parameters; what peft adds depends on the
    targets. Rank 8 adds 8 * (in + out) per adapted matrix. Documented bands:

    * every linear and pointwise conv of the 16 blocks (LORA_TARGETS, the default):
      819,200 parameters, 4.5-5.5 % of the LoRA-wrapped model (4.8 %);
    * the attention projections only (``--targets attention``): 262,144, 1.5-2.5 % (1.6 %),
      the "about 2 %" of the paper;
    * a GRU head for RML2018's 24 classes adds 302,616 more to either.
    """
    with torch.device("meta"):
        cfg = create_model("spectrumfm-paper").config
        d, ff, r = cfg.d_model, cfg.ff_dim, 8
        per_block = 4 * r * (d + d) + 2 * 2 * r * (d + ff) + r * (d + 2 * d) + r * (d + d)
        shares = {}
        for targets in ("all", "attention"):
            lora = apply_lora(create_model("spectrumfm-paper"), rank=r, targets=targets)
            shares[targets] = trainable_share(lora)
            head = build_head("technology", d, 24)
            shares[targets + "+gru-head"] = trainable_share(TaskModel(lora, head, "technology"))
    for name, (trainable, total, share) in shares.items():
        print(f"paper size, rank 8, {name}: {trainable:,} of {total:,} trainable = "
              f"{100 * share:.2f} %")
    assert shares["all"][0] == cfg.n_layers * per_block == 819_200
    assert 0.045 <= shares["all"][2] <= 0.055
    assert shares["attention"][0] == cfg.n_layers * 4 * r * 2 * d == 262_144
    assert 0.015 <= shares["attention"][2] <= 0.025
    assert shares["all+gru-head"][0] - shares["all"][0] == 302_616


def test_003_merged_and_unmerged_outputs_agree():
    model = apply_lora(_tiny())
    _perturb_lora(model)
    head = build_head("sensing", 64, 2).eval()
    feats = iq_features(_iq(6))
    with torch.no_grad():
        base = model.get_base_model()
        with model.disable_adapter():
            plain = model.forward_encoder(feats)
        adapted = model.forward_encoder(feats)
        logits = head(adapted)
        merged = merge(model).eval()
        assert type(merged) is type(base)
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        out = merged.forward_encoder(feats)
    assert (adapted - plain).abs().max() > 1e-2             # the adapter does something
    assert torch.allclose(out, adapted, atol=1e-5, rtol=0)
    assert torch.allclose(head(out), logits, atol=1e-5, rtol=0)


def test_004_adapter_save_load_round_trip(tmp_path):
    bdir = _backbone_dir(tmp_path)
    backbone, _ = load_pretrained(bdir)
    model = apply_lora(backbone, rank=4, alpha=8, targets="attention")
    _perturb_lora(model)
    head = build_head("modulation", 64, 3, hidden=16).eval()
    feats = iq_features(_iq(5))
    with torch.no_grad():
        want = TaskModel(model, head, "modulation").eval()(feats)
    out = save_adapter(tmp_path / "adapter", model, head, task="modulation",
                       classes=["a", "b", "c"], backbone_dir=bdir,
                       backbone_sha256=backbone_sha256(bdir), extra={"data": "x"})
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter.safetensors", "adapter_config.json", "head.safetensors"]
    adapter = load_file(out / ADAPTER_FILE)
    assert adapter and all("lora_" in k for k in adapter)
    assert (out / ADAPTER_FILE).stat().st_size < (bdir / "model.safetensors").stat().st_size / 4
    for merged in (False, True):
        m2, h2, cfg = load_adapter(out, merged=merged)
        assert cfg["classes"] == ["a", "b", "c"] and cfg["lora"]["rank"] == 4
        assert cfg["lora"]["targets"] == ["q_proj", "k_proj", "v_proj", "out_proj"]
        with torch.no_grad():
            got = TaskModel(m2, h2, "modulation")(feats)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), merged


def test_005_adapter_for_another_backbone_or_with_misfit_keys_is_refused(tmp_path):
    bdir = _backbone_dir(tmp_path)
    ad = save_adapter(tmp_path / "ad", apply_lora(_tiny()), build_head("sensing", 64, 2),
                      task="sensing", classes=["vacant", "occupied"], backbone_dir=bdir,
                      backbone_sha256=backbone_sha256(bdir))
    with pytest.raises(InputError, match="only fits the backbone it was trained on"):
        load_adapter(ad, backbone_dir=_backbone_dir(tmp_path, seed=1, name="other"))
    tensors = load_file(ad / ADAPTER_FILE)
    save_file(dict(sorted(tensors.items())[1:]), ad / ADAPTER_FILE)
    with pytest.raises(InputError, match=r"does not fit the backbone: missing"):
        load_adapter(ad)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["lora"]["rank"] = 4                      # config and tensors disagree on the rank
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    save_file(tensors, ad / ADAPTER_FILE)
    with pytest.raises(InputError, match="shape mismatch"):
        load_adapter(ad)
    (ad / HEAD_FILE).write_bytes(b"not safetensors")
    cfg["lora"]["rank"] = 8
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="head.safetensors: not a readable"):
        load_adapter(ad)
    # The recorded backbone retrained in place: same path, other weights.
    save_pretrained(bdir, _tiny(seed=2), arch="spectrumfm-tiny")
    with pytest.raises(InputError, match="only fits"):
        load_adapter(ad)


def test_007_lora_and_head_alone_fit_one_batch():
    """Gradients reach the LoRA matrices and the head: with the backbone frozen they alone
    memorise one batch (short windows keep each step to milliseconds)."""
    model = apply_lora(_tiny(window_len=32))
    task_model = TaskModel(model, build_head("technology", 64, 4, hidden=32, dropout=0.0),
                           "technology")
    feats = iq_features(_iq(8, seed=3, n=32))
    labels = torch.arange(8) % 4
    opt = torch.optim.AdamW([p for p in task_model.parameters() if p.requires_grad], lr=1e-2)
    first = task_model.loss(feats, labels).item()
    for _ in range(200):
        loss = task_model.loss(feats, labels)
        if loss.item() < first / 10:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


# ---- task heads -------------------------------------------------------------------------

def test_010_anomaly_score_is_deterministic_per_window_and_calibrated():
    model = _tiny().eval()
    head = ReconstructionAnomalyHead(N, n_masks=7)
    assert head.masks.sum(0).eq(1).all()             # every sample hidden exactly once
    feats = iq_features(_iq(6))
    with torch.no_grad():
        raw = head.raw_score(model, feats)
        assert torch.allclose(head.raw_score(model, feats[2:3]), raw[2:3], atol=1e-6)
        how = head.calibrate(np.r_[raw.numpy(), raw.numpy() * 5], np.r_[np.zeros(6), np.ones(6)])
        p = torch.softmax(head(model, feats), -1)[:, 1]
    assert "logistic fit" in how and ((p >= 0) & (p <= 1)).all() and (p < 0.5).all()
    assert "99th percentile" in head.calibrate(raw.numpy(), np.zeros(6))


def test_011_logistic_fit_recovers_known_parameters():
    x = np.random.default_rng(0).normal(size=20000)
    y = np.random.default_rng(1).random(20000) < 1 / (1 + np.exp(-(2.0 * x - 0.5)))
    a, b = fit_logistic(x, y, ridge=0.0)
    assert abs(a - 2.0) < 0.1 and abs(b + 0.5) < 0.1
    a, _ = fit_logistic([0.0, 1.0], [0, 1])           # separable: finite thanks to the ridge
    assert np.isfinite(a) and a > 0


def test_012_reference_encoder_computes_the_same_function():
    with torch.device("meta"):
        paper = create_model("spectrumfm-paper")
        ref = ReferenceEncoder(paper.config)
    encoder_params = sum(p.numel() for n, p in paper.named_parameters()
                         if n.startswith(("input_proj.", "blocks.")))
    assert sum(p.numel() for p in ref.parameters()) == encoder_params == 15_840_000
    model = _tiny().eval()
    ref = ReferenceEncoder(model.config).eval()
    ref.load_state_dict({k: v for k, v in model.state_dict().items()
                         if k.startswith(("input_proj.", "blocks."))}, strict=True)
    feats = iq_features(_iq(4))
    with torch.no_grad():
        assert torch.allclose(ref(feats), model.forward_encoder(feats), atol=1e-5, rtol=0)


# ---- commands ---------------------------------------------------------------------------

def _write_shards(folder, classes, n_per_class=32, seed=0):
    """A generator-format dataset: tones at class-dependent frequencies in noise, a class
    named noise / normal being noise alone, at SNRs -5, 5 and 15 dB."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    snr = np.tile([-5.0, 5.0, 15.0], len(labels))[:len(labels)]
    freq = 0.05 + 0.1 * labels[:, None]
    amp = np.where(np.isin(np.asarray(classes)[labels], ["noise", "normal"]), 0, 10 ** (snr / 20))
    iq = amp[:, None] * np.exp(2j * np.pi * (freq * np.arange(N) + rng.random((len(labels), 1))))
    iq += (rng.normal(size=iq.shape) + 1j * rng.normal(size=iq.shape)) / np.sqrt(2)
    with h5py.File(folder / "shard-000.h5", "w") as f:
        f["iq"] = iq.astype(np.complex64)
        f["label"] = labels.astype(np.int64)
        f["snr_db"] = snr.astype(np.float32)
        f.attrs["classes"] = json.dumps(list(classes))
        f.attrs["samp_rate"] = 1e6
    (folder / "dataset.json").write_text(json.dumps({"classes": list(classes)}))
    return f"shards:{folder}"


def _run(module, argv, capsys):
    code = module.main(module.get_args_parser().parse_args([str(a) for a in argv]))
    assert code == 0
    return capsys.readouterr().out.strip().splitlines()


@pytest.mark.parametrize("task,classes", [
    ("modulation", ["bpsk", "qpsk", "fm"]),
    ("sensing", ["noise", "tone"]),
    ("anomaly", ["normal", "jammed"]),
])
def test_030_finetune_then_evaluate(tmp_path, capsys, task, classes):
    bdir = _backbone_dir(tmp_path)
    spec = _write_shards(tmp_path / "data", classes)
    out = tmp_path / "adapter"
    _run(finetune, ["--task", task, "--backbone", bdir, "--data", spec, "--epochs", 2,
                    "--out", out, "--batch", 32, "--seed", 1, "--device", "cpu",
                    "--no-progress"], capsys)
    assert {"adapter.safetensors", "head.safetensors", "adapter_config.json"} <= \
        {p.name for p in out.iterdir()}
    assert not (out / "train_state.pt").exists()
    lines = _run(evaluate, ["--model", out, "--data", spec, "--json", "--device", "cpu"], capsys)
    res = json.loads(lines[-1])
    assert {"accuracy", "macro_f1", "per_class", "accuracy_per_snr"} <= set(res)
    assert 0 <= res["accuracy"] <= 1 and res["split"] == "test" and res["n"] > 0
    assert all({"precision", "recall", "f1"} <= set(m) for m in res["per_class"].values())
    assert set(res["accuracy_per_snr"]) >= {"-5", "5", "15"}
    if task == "sensing":
        assert 0 <= res["roc_auc"] <= 1 and 0 <= res["pd_at_pfa"] <= 1 and res["pfa"] == 0.1
        assert list(res["per_class"]) == ["vacant", "occupied"]
    if task == "anomaly":
        assert 0 <= res["roc_auc"] <= 1 and "pd_at_pfa" not in res
    res = json.loads(_run(evaluate, ["--model", out, "--data", spec, "--json", "--split", "all",
                                     "--per-frame"], capsys)[-1])
    assert res["n"] == len(classes) * 32 and res["per_frame"]


def test_031_bad_input_is_one_line(tmp_path):
    def run(module, *argv):
        module.main(module.get_args_parser().parse_args([str(a) for a in argv]))

    bdir = _backbone_dir(tmp_path)
    spec = _write_shards(tmp_path / "data", ["noise", "tone"], n_per_class=6)
    common = ["--data", spec, "--out", tmp_path / "o", "--task", "sensing"]
    with pytest.raises(InputError, match="model.safetensors: missing"):
        run(finetune, "--backbone", tmp_path / "nope", *common)
    with pytest.raises(InputError, match="--epochs must be at least 1"):
        run(finetune, "--backbone", bdir, "--epochs", 0, *common)
    with pytest.raises(InputError, match="unknown LoRA targets"):
        run(finetune, "--backbone", bdir, "--targets", "depthwise", *common)
    ad = save_adapter(tmp_path / "ad", apply_lora(_tiny()), build_head("sensing", 64, 2),
                      task="sensing", classes=["vacant", "occupied"], backbone_dir=bdir,
                      backbone_sha256=backbone_sha256(bdir))
    other = _backbone_dir(tmp_path, seed=5, name="other")
    with pytest.raises(InputError, match="only fits the backbone"):
        run(evaluate, "--model", ad, "--data", spec, "--backbone", other)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    (ad / "adapter_config.json").write_text(json.dumps({**cfg, "classes": ["empty", "busy"]}))
    with pytest.raises(InputError, match="differ from"):
        run(evaluate, "--model", ad, "--data", spec)


def test_032_task_split_keeps_pretrainings_test_windows_out_of_training(tmp_path):
    from spectrumfm.data import open_dataset, split_indices

    spec = _write_shards(tmp_path / "data", ["bpsk", "qpsk"], n_per_class=20)
    source = open_dataset(spec)                      # as `spectrumfm pretrain` splits it
    pretrain = split_indices(source.labels, source.snr_db, (0.8, 0.1, 0.1), seed=3,
                             groups=source.frame_index)
    sensing = open_dataset(spec, task="sensing")     # relabelled, noise windows appended
    parts = finetune.task_split(spec, sensing, window_len=N, fractions=(0.8, 0.1, 0.1), seed=3)
    n = len(source)
    for ours, theirs in zip(parts, pretrain):
        assert np.array_equal(ours[ours < n], theirs)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(sensing)))
    assert all(len(p[p >= n]) for p in parts)        # noise windows in every split


@pytest.mark.parametrize("baseline", [False, True])
def test_033_benchmark_json(capsys, baseline):
    argv = ["--model", "spectrumfm-tiny", "--batch", 2, "--device", "cpu", "--seconds", 0.05,
            "--warmup", 0, "--json"] + (["--baseline"] if baseline else [])
    res = json.loads(_run(benchmark, argv, capsys)[-1])
    assert {"model", "params", "lora_params", "windows_per_s", "device"} <= set(res)
    assert res["model"] == "spectrumfm-tiny" and res["device"] == "cpu"
    assert res["params"] == 126_528 and res["lora_params"] == 25_600
    assert res["windows_per_s"] > 0
    assert res["implementation"] == ("reference" if baseline else "spectrumfm")
