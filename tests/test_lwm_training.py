"""LWM-Spectro's `spectrumfm pretrain` stages and `spectrumfm benchmark`, on CPU at tiny size.

One small modulation dataset from `spectrumfm generate` (72 examples of 1,024 samples, one
SNR so every class reaches the validation split), one stage-1 run through the installed
command shared by the tests that read it; the contrastive stage, resume and refusals run
in-process on top of it.
"""

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from sfm_testutil import run_cli
from spectrumfm.data import split_indices
from spectrumfm.errors import InputError
from spectrumfm.models import LWMSpectro, create_model
from spectrumfm.train import load_pretrained, load_train_state
from spectrumfm.train.lwm import (contrastive_objective, masked_objective, open_examples,
                                  spectrogram_stats)
from spectrumfm_apps import benchmark
from spectrumfm_apps.pretrain import get_args_parser, main

CONFIG_KEYS = {"arch", "model_config", "features", "code_version", "command", "created",
               "stage", "objective", "init", "data", "data_classes", "samp_rate", "split",
               "corpus_stats", "metrics"}
# The SpectrumFM benchmark's JSON keys, which the spectrogram benchmark keeps.
BENCH_KEYS = {"model", "implementation", "params", "params_total", "lora_params",
              "windows_per_s", "windows_per_s_median", "device", "device_name", "batch",
              "threads", "precision", "batches", "seconds", "torch"}
# 1,024-sample examples: the tiny model's 128 frames of 128 samples fit at hop 7.
HOP, SAMPLES = 7, 127 * 7 + 128


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "gen"
    res = run_cli("generate", "--family", "modulation", "--classes", "bpsk,qpsk,16qam",
                  "--n-per-class", 24, "--snr-db", 10, "--workers", 1, "--out", out, "-q")
    assert res.returncode == 0, res.stderr
    return f"shards:{out}"


@pytest.fixture(scope="module")
def stage1(shards, tmp_path_factory):
    """Stage 1 through the installed command: 2 epochs of masked modelling."""
    out = tmp_path_factory.mktemp("runs") / "s1"
    res = run_cli("pretrain", "--model", "lwm-spectro-tiny", "--data", shards, "--out", out,
                  "--epochs", 2, "--batch", 16, "--device", "cpu", "--no-progress",
                  env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def lwm_args(data, out, *extra):
    return get_args_parser().parse_args(
        ["--model", "lwm-spectro-tiny", "--data", data, "--out", str(out), "--batch", "16",
         "--device", "cpu", "--no-progress", "--epochs", "1", *extra])


def test_001_stage1_writes_a_checkpoint_that_rebuilds_itself(shards, stage1):
    out, res = stage1
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md",
                                              "train_state.pt", "run_config.json"}
    assert (f"features: 128 x 128 spectrograms of {SAMPLES} samples (window 128 hann, hop "
            f"{HOP}, FFT 128); hop lowered from 64" in res.stdout)
    assert re.search(r"^pretrained lwm-spectro-tiny \(masked\) on .* spectrograms/s -> ",
                     res.stdout, re.M), res.stdout
    meta = json.loads((out / "config.json").read_text())
    assert set(meta) == CONFIG_KEYS and meta["objective"] == "masked"
    assert meta["features"] == {"recipe": "stft-db-corpus", "window_len": SAMPLES,
                                "image": [128, 128]}
    c = meta["model_config"]
    assert (c["hop"], c["n_frames"], c["patch_size"]) == (HOP, 128, 8)

    # The statistics are the training split's, the split every command shares.
    ds, config, length = open_examples(shards, create_model("lwm-spectro-tiny").config)
    assert (length, config.hop, ds.window_len) == (1024, HOP, SAMPLES)
    train, val, _ = split_indices(ds.labels, ds.snr_db, seed=0, groups=ds.frame_index)
    mean, std, n = spectrogram_stats(ds, train, config)
    assert (c["spec_mean"], c["spec_std"]) == pytest.approx((mean, std), rel=1e-9)
    assert meta["corpus_stats"]["examples"] == n == len(train) and 1.0 < std < 30.0
    run_cfg = json.loads((out / "run_config.json").read_text())
    assert (run_cfg["train_windows"], run_cfg["val_windows"]) == (len(train), len(val))
    assert run_cfg["train"]["lr"] == 5e-4 and run_cfg["train"]["weight_decay"] == 0.05
    assert run_cfg["train"]["min_lr_ratio"] == pytest.approx(1e-8 / 5e-4)
    steps = math.ceil(len(train) / 16)
    assert run_cfg["train"]["warmup_steps"] == min(5 * steps, 2 * steps // 5)

    model, loaded = load_pretrained(out)
    assert isinstance(model, LWMSpectro) and loaded == meta and not model.training
    assert "`stft-db-corpus` features, as 128 x 128 images" in (out / "README.md").read_text()
    iq = torch.from_numpy(ds.batch(val[:3])[0])
    with torch.no_grad():
        images = model.features(iq)
        emb = model.embed(images)
    assert images.shape == (3, 128, 128) and emb.shape == (3, 64) and emb.isfinite().all()
    # Corpus statistics bring the training images near zero mean and unit variance.
    assert abs(float(images.mean())) < 1.0 and 0.3 < float(images.std()) < 3.0
    # A stored recipe this model does not compute is refused, naming both.
    meta["features"]["recipe"] = "amp-phase-minmax"
    tampered = out.parent / "tampered"
    shutil.copytree(out, tampered)
    (tampered / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="trained on 'amp-phase-minmax' features; this code "
                                         "computes 'stft-db-corpus'"):
        load_pretrained(tampered)
    ds.close()


def test_002_masked_loss_is_finite_and_decreases(shards, stage1):
    losses = [float(m) for m in re.findall(r"train loss ([0-9.e+-]+)", stage1[1].stderr)]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), stage1[1].stderr
    # A few steps on one batch with one mask: the masked loss must fall.
    ds, config, _ = open_examples(shards, create_model("lwm-spectro-tiny").config)
    torch.manual_seed(0)
    model = create_model("lwm-spectro-tiny", hop=config.hop, spec_mean=-1.0, spec_std=7.0)
    batch = tuple(torch.from_numpy(a) for a in ds.batch(np.arange(0, 72, 6))[:2])
    ds.close()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    history = []
    for _ in range(6):
        out = masked_objective(model, batch, torch.Generator().manual_seed(1))
        assert set(out) == {"loss", "loss_recon"} and out["loss"].isfinite()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append(out["loss"].item())
    assert all(b < a for a, b in zip(history, history[1:])), history
    assert history[-1] < 0.9 * history[0], history


def test_003_contrastive_stage_from_stage1(shards, stage1, tmp_path, capsys):
    s1 = stage1[0]
    out = tmp_path / "s2"
    assert main(lwm_args(shards, out, "--stage", "contrastive", "--init", str(s1))) == 0
    printed = capsys.readouterr().out
    assert f"(from {s1})" in printed and "(contrastive)" in printed
    meta = json.loads((out / "config.json").read_text())
    before = json.loads((s1 / "config.json").read_text())["model_config"]
    assert meta["objective"] == "contrastive" and meta["init"] == str(s1)
    # The features (fitted hop, corpus statistics) come with the stage-1 weights.
    assert meta["model_config"] == before
    assert math.isfinite(meta["metrics"]["val_loss_cont"])
    # The joint loss is 1.0 x masked + 0.3 x SupCon on the batch's labels.
    model, _ = load_pretrained(out)
    ds, _, _ = open_examples(shards, model.config, allow_fit=False)
    batch = tuple(torch.from_numpy(a) for a in ds.batch(np.arange(0, 72, 4))[:2])
    ds.close()
    with torch.no_grad():
        parts = contrastive_objective(model, batch, torch.Generator().manual_seed(0))
    assert parts["loss_cont"] > 0
    assert parts["loss"] == pytest.approx(parts["loss_recon"] + 0.3 * parts["loss_cont"])


def test_004_resume_keeps_the_runs_features(shards, stage1, tmp_path):
    out = tmp_path / "s1"
    shutil.copytree(stage1[0], out)
    before = json.loads((out / "config.json").read_text())["model_config"]
    assert main(lwm_args(shards, out, "--resume", "--epochs", "3")) == 0
    assert load_train_state(out)["epoch"] == 3
    assert json.loads((out / "config.json").read_text())["model_config"] == before


def test_005_bad_input_is_one_line(shards, stage1, tmp_path):
    s1 = str(stage1[0])
    cases = [
        (lwm_args(shards, tmp_path / "a", "--model", "lwm-spectro-paper", "--init", s1),
         "holds lwm-spectro-tiny, not --model lwm-spectro-paper"),
        (lwm_args(shards, tmp_path / "b", "--init", s1, "--hop", "5"), "--hop: the features"),
        (lwm_args(shards, tmp_path / "c", "--w-next", "1"), "no next-slot loss"),
        (lwm_args(shards, tmp_path / "d", "--model", "spectrumfm-tiny", "--stage", "masked"),
         "--stage: only for spectrogram models"),
        (lwm_args(shards, tmp_path / "e", "--hop", "64"),
         "examples of 1024 samples are too short for one 128 x 128 spectrogram (8256 "
         "samples at hop 64); generate longer examples (spectrumfm generate --length 8256)"),
        (lwm_args(shards, tmp_path / "f", "--mask-ratio", "1"), "mask_ratio 1.0 must lie"),
        (lwm_args(shards, tmp_path / "g", "--init", str(tmp_path)), "config.json: missing"),
    ]
    for args, expect in cases:
        with pytest.raises(InputError, match=re.escape(expect)) as exc:
            main(args)
        assert "\n" not in str(exc.value)
    assert not any(tmp_path.iterdir())


def test_005b_finetune_refuses_spectrumfm_only_options_for_a_spectrogram_backbone(
        shards, stage1, tmp_path):
    """LWM-Spectro fine-tunes on its own spectrograms (tests/test_lwm_finetune.py); the
    SpectrumFM feature option is one line, exit 2."""
    res = run_cli("finetune", "--task", "modulation", "--backbone", stage1[0], "--data", shards,
                  "--epochs", 1, "--out", tmp_path / "ft", "--features", "amp-phase-level")
    assert res.returncode == 2
    assert res.stderr.strip() == ("spectrumfm: error: --features amp-phase-level: an "
                                  "LWM-Spectro backbone reads the spectrograms it was "
                                  "pretrained on; leave --features out")
    assert not (tmp_path / "ft").exists()


def test_006_benchmark_counts_spectrograms(tmp_path):
    res = run_cli("benchmark", "--model", "lwm-spectro-tiny", "--batch", 2, "--device", "cpu",
                  "--seconds", 0.3, "--warmup", 0, "--threads", 1, "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert BENCH_KEYS <= set(out) and out["implementation"] == "lwm-spectro"
    model = create_model("lwm-spectro-tiny")
    assert out["params"] == sum(p.numel() for p in model.encoder.parameters())
    assert out["windows_per_s"] > 0 and "spectrograms/s" in res.stdout
    assert out["input_samples"] == 8256 and out["image"] == [128, 128]


def test_007_benchmark_moe_is_one_expert_plus_router(capsys):
    args = benchmark.get_args_parser().parse_args(
        ["--model", "lwm-spectro-tiny", "--moe", "--batch", "2", "--seconds", "0.2",
         "--warmup", "0", "--json"])
    assert benchmark.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    assert BENCH_KEYS <= set(out) and out["moe"] and out["implementation"] == "lwm-spectro-moe"
    assert out["params"] == out["expert_params"] + out["router_params"]
    assert out["router_param_share"] == pytest.approx(out["router_params"] / out["params"],
                                                      abs=1e-4)
    assert "one expert plus the router" in lines[-2] and "Router " in lines[-2]
    with pytest.raises(InputError, match="--moe: only for spectrogram models"):
        benchmark.main(benchmark.get_args_parser().parse_args(
            ["--model", "spectrumfm-tiny", "--moe", "--seconds", "0.1"]))
