"""`spectrumfm pretrain --experts`: LWM-Spectro's mixture of experts (its paper's §IV), on CPU
at tiny size.

One small technology dataset from `spectrumfm generate` (wifi, lte, nr and ble, which no
expert takes; 20 examples each of 1,024 samples, one SNR so every class reaches every
split), one run through the installed command shared by the tests that read it: three
2-epoch experts and a 3-epoch router, about 10 s on one core.
"""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from sfm_testutil import run_cli
from spectrumfm.data import split_indices
from spectrumfm.errors import InputError
from spectrumfm.models import LWMSpectro, LWMSpectroMoE, create_model
from spectrumfm.train import load_pretrained, save_pretrained
from spectrumfm.train.lwm import open_examples, spectrogram_stats
from spectrumfm.train.lwm_moe import balanced_indices
from spectrumfm_apps.pretrain import get_args_parser, main

FAMILIES = ["wifi", "lte", "nr"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def generate(out, n_per_class, classes="wifi,lte,nr,ble"):
    res = run_cli("generate", "--family", "technology", "--classes", classes,
                  "--n-per-class", n_per_class, "--snr-db", 15, "--workers", 1, "--out", out,
                  "-q", env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    return f"shards:{out}"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "tech", 20)


@pytest.fixture(scope="module")
def moe_run(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moe"
    res = run_cli("pretrain", "--model", "lwm-spectro-tiny", "--data", shards, "--out", out,
                  "--experts", ",".join(FAMILIES), "--epochs", 2, "--router-epochs", 3,
                  "--batch", 16, "--device", "cpu", "--no-progress",
                  env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def family_split(shards):
    """The run's split, restricted to the families: {family: (train, val, test)}."""
    ds, config, _ = open_examples(shards, create_model("lwm-spectro-tiny").config)
    parts = split_indices(ds.labels, ds.snr_db, seed=0, groups=ds.frame_index)
    out = {f: tuple(idx[ds.labels[idx] == ds.classes.index(f)] for idx in parts)
           for f in FAMILIES}
    return ds, config, out


def test_001_writes_three_experts_and_the_mixture(shards, moe_run):
    out, res = moe_run
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md",
                                              "router.json", "run_config.json",
                                              "train_state.pt", "experts"}
    assert sorted(p.name for p in (out / "experts").iterdir()) == sorted(FAMILIES)
    assert "note: left out the 20 examples of the classes no expert takes: ble" in res.stdout
    ds, _, split = family_split(shards)
    ds.close()
    for family in FAMILIES:
        # Each expert is a plain LWM-Spectro checkpoint, trained on its family alone.
        expert, meta = load_pretrained(out / "experts" / family)
        assert isinstance(expert, LWMSpectro) and not expert.training
        assert meta["arch"] == "lwm-spectro-tiny" and meta["objective"] == "masked"
        assert meta["expert"]["family"] == family
        run_cfg = json.loads((out / "experts" / family / "run_config.json").read_text())
        train, val, _ = split[family]
        assert (run_cfg["train_windows"], run_cfg["val_windows"]) == (len(train), len(val))
        assert re.search(rf"^pretrained lwm-spectro-tiny expert {family} \(masked\) on .* "
                         rf"\({len(train)} spectrograms\)", res.stdout, re.M), res.stdout
    assert re.search(r"^router accuracy: val [0-9.]+ on 6 spectrograms \(wifi [0-9.]+, lte "
                     r"[0-9.]+, nr [0-9.]+\); test .* -> .*router\.json$", res.stdout, re.M)
    assert re.search(r"^mixture of 3 experts \(wifi, lte, nr\) -> .*: [0-9,]+ parameters, "
                     r"[0-9,]+ active per spectrogram", res.stdout, re.M), res.stdout
    card = (out / "README.md").read_text()
    assert "active per input (the router and the one expert it picks)" in card


def test_002_the_mixture_holds_the_saved_experts_unchanged(moe_run):
    out, _ = moe_run
    moe, meta = load_pretrained(out)
    assert isinstance(moe, LWMSpectroMoE) and not moe.training
    assert meta["arch"] == "lwm-spectro-moe" and moe.expert_names == FAMILIES
    assert meta["model_config"]["expert_arch"] == "lwm-spectro-tiny"
    for family in FAMILIES:
        expert, _ = load_pretrained(out / "experts" / family)
        saved, inside = expert.state_dict(), moe.experts[family].state_dict()
        assert saved.keys() == inside.keys()
        assert all(torch.equal(saved[k], inside[k]) for k in saved), family
    # The router did train: it is not the one its seed builds.
    torch.manual_seed(0)
    fresh = type(moe.router)(moe.router.config)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                      moe.router.state_dict().values()))
    rc = moe.router.config
    assert (rc.n_experts, rc.d_model, rc.n_layers, rc.patch_size) == (3, 64, 2, 8)


def test_003_experts_and_router_share_the_mixed_corpus_statistics(shards, moe_run):
    out, _ = moe_run
    ds, config, split = family_split(shards)
    train = np.sort(np.concatenate([split[f][0] for f in FAMILIES]))
    mean, std, n = spectrogram_stats(ds, train, config)
    ds.close()
    meta = json.loads((out / "config.json").read_text())
    configs = [meta["model_config"]["experts"][f] for f in FAMILIES]
    configs += [json.loads((out / "experts" / f / "config.json").read_text())["model_config"]
                for f in FAMILIES]
    for c in configs:
        assert (c["spec_mean"], c["spec_std"]) == pytest.approx((mean, std), rel=1e-9)
        assert c["hop"] == config.hop
    assert meta["corpus_stats"]["examples"] == n == len(train)
    assert meta["features"] == {"recipe": "stft-db-corpus", "window_len": config.input_len,
                                "image": [128, 128]}


def test_004_router_json_reports_val_and_test_accuracy(shards, moe_run):
    out, _ = moe_run
    report = json.loads((out / "router.json").read_text())
    ds, _, split = family_split(shards)
    ds.close()
    assert report["families"] == FAMILIES and report["ignored_classes"] == ["ble"]
    for name, k in (("val", 1), ("test", 2)):
        r = report[name]
        confusion = np.asarray(r["confusion"])
        assert confusion.shape == (3, 3)
        assert confusion.sum() == r["n"] == sum(len(split[f][k]) for f in FAMILIES)
        assert r["counts"] == {f: len(split[f][k]) for f in FAMILIES}
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
        for i, f in enumerate(FAMILIES):
            assert 0.0 <= r["per_family"][f] <= 1.0
            assert r["per_family"][f] == pytest.approx(confusion[i, i] / confusion[i].sum())
    meta = json.loads((out / "config.json").read_text())
    assert meta["routing"] == {"val": report["val"], "test": report["test"]}


def test_005_round_trip_gives_identical_outputs(shards, moe_run, tmp_path):
    out, _ = moe_run
    moe, _ = load_pretrained(out)
    ds, _, split = family_split(shards)
    iq = torch.from_numpy(ds.batch(np.concatenate([split[f][2] for f in FAMILIES]))[0])
    ds.close()
    with torch.no_grad():
        images = moe.features(iq)
        tokens, probs = moe(images)
        again = save_pretrained(tmp_path / "copy", moe, arch="lwm-spectro-moe")
        tokens2, probs2 = load_pretrained(again)[0](images)
        # Top-1: each image's tokens are its chosen expert's, and only that expert's.
        for i, k in enumerate(probs.argmax(-1).tolist()):
            one = moe.experts[FAMILIES[k]].forward_encoder(images[i:i + 1])
            torch.testing.assert_close(tokens[i:i + 1], one)
    assert tokens.shape == (len(iq), 256, 64) and probs.shape == (len(iq), 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(iq)))
    assert torch.equal(tokens, tokens2) and torch.equal(probs, probs2)


def test_006_strict_loading_names_what_does_not_fit(moe_run, tmp_path):
    out, _ = moe_run
    bad = tmp_path / "bad"
    shutil.copytree(out, bad, ignore=shutil.ignore_patterns("experts", "train_state.pt"))
    meta = json.loads((bad / "config.json").read_text())
    meta["model_config"]["router"]["n_layers"] = 3
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"checkpoint does not match its config: missing "
                                         r"router\.encoder\..*2\.\*") as exc:
        load_pretrained(bad)
    assert "\n" not in str(exc.value)
    meta["model_config"]["expert_names"] = ["wifi", "lte"]
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="expert_names .* do not name the experts"):
        load_pretrained(bad)


def test_007_balanced_mix_repeats_smaller_families():
    rng = np.random.default_rng(0)
    idx = np.arange(10)
    family = np.array([0] * 6 + [1] * 3 + [2])
    out = balanced_indices(idx, family, 3, rng)
    assert np.bincount(family[out], minlength=3).tolist() == [6, 6, 6]
    assert sorted(set(out.tolist())) == idx.tolist()      # no example dropped
    assert np.bincount(out[family[out] == 1]).max() == 2


def moe_args(data, out, *extra):
    return get_args_parser().parse_args(
        ["--model", "lwm-spectro-tiny", "--data", data, "--out", str(out), "--batch", "16",
         "--device", "cpu", "--no-progress", "--epochs", "1", "--experts", "wifi,lte,nr",
         *extra])


def test_008_bad_input_is_one_line(shards, moe_run, tmp_path):
    # Through the installed command: one line on stderr, exit 2, nothing written.
    for experts, expect in (
            ("wifi,lte,gsm", "--experts: gsm not among the dataset's classes (wifi, lte, nr, "
                             "ble)"),
            ("wifi", "--experts wifi: a mixture needs at least 2 families, e.g. --experts "
                     "wifi,lte,nr")):
        res = run_cli("pretrain", "--model", "lwm-spectro-tiny", "--data", shards, "--out",
                      tmp_path / "cli", "--epochs", 1, "--experts", experts,
                      env={"OMP_NUM_THREADS": "1"})
        assert res.returncode == 2 and res.stderr.strip() == f"spectrumfm: error: {expect}"
    few = generate(tmp_path / "few", 2, "wifi,lte,nr")
    cases = [
        (moe_args(few, tmp_path / "a"), "--experts wifi: no validation examples of class "
                                        "wifi in"),
        (moe_args(shards, tmp_path / "b", "--experts", "wifi,wifi"), "named twice"),
        (moe_args(shards, tmp_path / "c", "--stage", "contrastive"),
         "--stage contrastive: not with --experts"),
        (moe_args(shards, tmp_path / "d", "--init", str(moe_run[0])), "--init: not with"),
        (moe_args(shards, tmp_path / "e", "--resume"), "--resume: not with --experts"),
        (moe_args(shards, moe_run[0]), "already holds a training run"),
        (moe_args(shards, tmp_path / "f", "--model", "spectrumfm-tiny"),
         "--experts: only for spectrogram models"),
        (moe_args(shards, tmp_path / "g", "--router-epochs", "0"), "--router-epochs must be"),
    ]
    plain = get_args_parser().parse_args(
        ["--model", "lwm-spectro-tiny", "--data", shards, "--out", str(tmp_path / "h"),
         "--epochs", "1", "--router-epochs", "2"])
    cases.append((plain, "--router-epochs: only with --experts"))
    for args, expect in cases:
        with pytest.raises(InputError, match=re.escape(expect)) as exc:
            main(args)
        assert "\n" not in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few"]
