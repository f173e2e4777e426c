"""`spectrumfm evaluate --few-shot`: the splitter, the CNN baseline, the methods and the CLI.

The splitter is checked on many random label and group layouts; the end-to-end run uses a
tiny LWM-Spectro checkpoint with random weights (16 x 16 images, one 16-wide layer) on
three classes of 256-sample tones written straight to a shard, so the whole protocol (two
N values, two trials, four methods) runs in seconds on one CPU thread.
"""

import json
import re

import h5py
import numpy as np
import pytest
import torch

from spectrumfm.errors import InputError
from spectrumfm.models import LWMSpectroMoE, ResCNNHead, Router, RouterConfig, create_model
from spectrumfm.models.spectrogram_cnn import SpectrogramCNN
from spectrumfm.train import save_pretrained
from spectrumfm.train.few_shot import (METHODS, FewShotConfig, encode, few_shot_split,
                                       run_trial)
from spectrumfm_apps import cli

# 16 frames of 16 samples at hop 16: 256 samples per image.
TINY = dict(n_frames=16, n_fft=16, win_length=16, hop=16, patch_size=4, d_model=16,
            ff_dim=32, n_heads=2, n_layers=1, proj_dim=16, spec_mean=-10.0, spec_std=10.0)
CLASSES = ["low", "mid", "high"]
PER_CLASS = 12


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shards(folder, classes=CLASSES, per_class=PER_CLASS, seed=0):
    """Tones at a frequency per class in noise, 256 samples each, as one shard."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(len(classes)), per_class)
    freq = (0.1 + 0.25 * labels + rng.uniform(-0.03, 0.03, len(labels)))[:, None]
    t = np.arange(256)
    iq = 2 * np.exp(2j * np.pi * (freq * t + rng.random((len(labels), 1))))
    iq += (rng.normal(size=iq.shape) + 1j * rng.normal(size=iq.shape)) / np.sqrt(2)
    with h5py.File(folder / "shard-000.h5", "w") as f:
        f["iq"] = iq.astype(np.complex64)
        f["label"] = labels.astype(np.int64)
        f["snr_db"] = np.full(len(labels), 6.0, np.float32)
        f.attrs["classes"] = json.dumps(classes)
        f.attrs["samp_rate"] = 1e6
    (folder / "dataset.json").write_text(json.dumps({"classes": classes}))
    return f"shards:{folder}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("few_shot")
    torch.manual_seed(0)
    ckpt = save_pretrained(root / "lwm", create_model("lwm-spectro-tiny", **TINY),
                           arch="lwm-spectro-tiny")
    return {"root": root, "ckpt": ckpt, "data": _shards(root / "tones")}


def _cli(capsys, *argv):
    rc = cli.main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


# ---- the splitter -----------------------------------------------------------------------

def _random_layout(rng):
    """Labels and groups of 1 to 4 examples each (one class per group), 2 to 5 classes."""
    n_classes = int(rng.integers(2, 6))
    sizes = rng.integers(1, 5, size=int(rng.integers(10, 60)))
    groups = np.repeat(np.arange(len(sizes)), sizes)
    labels = rng.integers(0, n_classes, size=len(sizes))[groups]
    order = rng.permutation(len(groups))          # groups need not be contiguous
    return labels[order], groups[order] * 7 + 3, n_classes


def test_001_split_never_leaks_and_counts_exactly_over_many_layouts():
    done = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        labels, groups, n_classes = _random_layout(rng)
        n_train, n_val, n_test = (int(v) for v in rng.integers(1, 5, size=3))
        try:
            parts = few_shot_split(labels, groups, n_train, n_val, n_test,
                                   np.random.default_rng(seed), classes=range(n_classes))
        except InputError as e:
            assert "too few" in str(e) and "\n" not in str(e)
            continue
        done += 1
        for a in range(3):
            for b in range(a + 1, 3):
                assert not set(parts[a]) & set(parts[b]), seed
                assert not set(groups[parts[a]]) & set(groups[parts[b]]), seed
        for part, n in zip(parts, (n_train, n_val, n_test)):
            assert np.array_equal(np.bincount(labels[part], minlength=n_classes),
                                  np.full(n_classes, n)), seed
            assert np.all(np.diff(part) > 0)
    assert done > 100


def test_002_mixed_groups_and_no_groups():
    # A group with two classes belongs to its first example's class; the other examples
    # of it are never used, so it cannot leak.
    labels = np.array([0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 0])
    groups = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    for seed in range(50):
        tr, va, te = few_shot_split(labels, groups, 2, 1, 2, np.random.default_rng(seed))
        assert 1 not in tr and 1 not in va and 1 not in te
        assert len({*groups[tr]} & {*groups[te]}) == 0
    tr, va, te = few_shot_split(np.repeat([0, 1], 5), None, 2, 1, 2,
                                np.random.default_rng(0))
    assert (len(tr), len(va), len(te)) == (4, 2, 4)


def test_003_test_is_fixed_and_train_and_val_nest_across_n():
    labels, groups = np.repeat(np.arange(3), 60), np.repeat(np.arange(90), 2)
    before = None
    for n in (1, 2, 5, 10, 20, 40):
        parts = few_shot_split(labels, groups, n, min(n, 6), 8, np.random.default_rng([3, 1]))
        if before is not None:
            assert np.array_equal(parts[2], before[2])
            assert set(before[0]) <= set(parts[0]) and set(before[1]) <= set(parts[1])
        before = parts
    other = few_shot_split(labels, groups, 40, 6, 8, np.random.default_rng([3, 2]))
    assert not np.array_equal(other[2], before[2])       # another trial, another test part


def test_004_too_few_and_one_class_are_one_line_errors():
    labels = np.concatenate([np.zeros(30, int), np.ones(12, int)])
    with pytest.raises(InputError, match=r"^class 'jam' has 12 examples, too few for 4 test "
                                         r"\+ 2 validation \+ 10 training per class; the "
                                         r"largest N/class that fits is 6$"):
        few_shot_split(labels, None, 10, 2, 4, np.random.default_rng(0), ["tone", "jam"])
    # Groups of 3: the test part takes 2 groups (2 examples left unused), validation 1.
    with pytest.raises(InputError, match=r"^class 'jam' has 12 examples in 4 groups, too few "
                                         r".*; the largest N/class that fits is 3$"):
        few_shot_split(labels, np.arange(42) // 3, 10, 2, 4, np.random.default_rng(0),
                       ["tone", "jam"])
    with pytest.raises(InputError, match="^class 'jam' has 0 examples.*no N/class fits"):
        few_shot_split(np.zeros(30, int), None, 2, 2, 2, np.random.default_rng(0),
                       ["tone", "jam"])
    with pytest.raises(InputError, match=r"^only one class \('tone'\)"):
        few_shot_split(np.zeros(30, int), None, 2, 2, 2, np.random.default_rng(0), ["tone"])


# ---- the models -------------------------------------------------------------------------

def test_005_cnn_baseline_shapes_and_a_finite_backward():
    for side, n_classes in ((16, 3), (128, 5)):
        net = SpectrogramCNN(n_classes)
        x = torch.randn(4, side, side)
        logits = net(x)
        assert logits.shape == (4, n_classes)
        torch.nn.functional.cross_entropy(logits, torch.arange(4) % n_classes).backward()
        assert all(p.grad is not None and p.grad.isfinite().all() for p in net.parameters())
    assert sum(p.numel() for p in SpectrogramCNN(3).parameters()) == 97_392 + 129 * 3
    with pytest.raises(ValueError, match="T, K >= 16"):
        SpectrogramCNN(3)(torch.randn(2, 8, 8))


def test_006_pooled_embeddings_give_the_head_the_same_logits_as_tokens():
    head = ResCNNHead(16, 3).eval()
    tokens = torch.randn(5, 7, 16)
    torch.testing.assert_close(head(tokens), head(tokens.mean(dim=1, keepdim=True)))


def test_006b_the_linear_probe_reads_coordinates_the_paper_head_cannot():
    # Two classes that differ only in which embedding coordinate is raised: the linear probe
    # separates them at once; the pooled vector's values are a permutation of each other's.
    from spectrumfm.train.few_shot import LinearProbe

    torch.manual_seed(0)
    x = torch.zeros(64, 1, 32)
    y = torch.arange(64) % 2
    x[y == 0, 0, 10] = 3.0
    x[y == 1, 0, 20] = 3.0
    # The paper head's five convolutions reach 5 coordinates either side of the raised one,
    # clear of the edges' padding: shift-equivariant convolutions, then the average over
    # coordinates, give both classes the same logits whatever the weights.
    head = ResCNNHead(32, 2).eval()
    torch.testing.assert_close(head(x[:1]), head(x[1:2]))
    probe = LinearProbe(32, 2)
    assert probe(torch.randn(5, 7, 32)).shape == (5, 2)
    opt = torch.optim.AdamW(probe.parameters(), lr=0.05)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(probe(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (probe(x).argmax(dim=1) == y).all()


def test_007_a_mixture_of_experts_runs_all_but_finetuned(tiny):
    from spectrumfm.train.lwm import open_examples

    experts = {k: create_model("lwm-spectro-tiny", **TINY) for k in ("a", "b")}
    router = Router(RouterConfig(n_experts=2, n_frames=16, n_fft=16, patch_size=4,
                                 d_model=16, ff_dim=32, n_heads=2, n_layers=1))
    moe = LWMSpectroMoE(experts, router).eval()
    images = torch.randn(6, 16, 16)
    assert encode(moe, images).shape == (6, 16, 16)
    data, _, _ = open_examples(tiny["data"], moe.config, allow_fit=False)
    splits = {2: few_shot_split(data.labels, data.frame_index, 2, 2, 3,
                                np.random.default_rng(0))}
    cfg = FewShotConfig(epochs=1, min_batches=2)
    got = list(run_trial(moe, data, splits, ("frozen", "cnn"), cfg, torch.device("cpu"),
                         trial=0))
    assert [(n, m) for n, m, _ in got] == [(2, "frozen"), (2, "cnn")]
    with pytest.raises(ValueError, match="mixture of experts"):
        next(run_trial(moe, data, splits, METHODS, cfg, torch.device("cpu"), trial=0))


# ---- the command ------------------------------------------------------------------------

def test_008_end_to_end_writes_json_md_png_for_every_method_and_n(tiny, capsys):
    out = tiny["root"] / "run"
    rc, stdout, err = _cli(capsys, "--few-shot", "4,2", "--trials", 2, "--model",
                           tiny["ckpt"], "--data", tiny["data"], "--out", out, "--n-test", 4,
                           "--n-val", 3, "--epochs", 2, "--device", "cpu", "--json")
    assert rc == 0, err
    assert len(re.findall(r"^trial \d/2 N=\d: frozen acc ", err, re.M)) == 4, err
    report = json.loads((out / "few_shot.json").read_text())
    assert json.loads(stdout.strip().splitlines()[-1])["summary"] == report["summary"]
    assert report["status"] == "finished" and report["classes"] == CLASSES
    assert report["chance"] == pytest.approx(1 / 3)
    assert report["settings"]["n_val"] == {"2": 2, "4": 3}
    runs = report["runs"]
    assert sorted((r["n"], r["trial"], r["method"]) for r in runs) == sorted(
        (n, t, m) for n in (2, 4) for t in (0, 1) for m in METHODS)
    for r in runs:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 and r["seconds"] > 0
        assert r["examples"] == {"train": 3 * r["n"], "val": 3 * min(r["n"], 3), "test": 12}
        assert 1 <= r["best_epoch"] <= r["epochs"] <= 2
    assert [(s["n"], s["method"], s["trials"]) for s in report["summary"]] == [
        (n, m, 2) for n in (2, 4) for m in METHODS]
    assert set(report["seconds"]) == {*METHODS, "total"}
    md = (out / "few_shot.md").read_text()
    assert md.count("±") == 2 * 2 * len(METHODS) and re.search(r"^\| 2 \| ", md, re.M)
    assert "chance level 0.333" in md and "2 of 2 trials" in md and md in stdout
    assert (out / "few_shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_008b_an_interrupted_trial_is_not_counted_as_a_trial():
    from spectrumfm.train.few_shot import summarise
    from spectrumfm_apps.few_shot import table

    runs = [{"trial": t, "n": n, "method": m, "accuracy": 0.5 + t / 10, "macro_f1": 0.4,
             "seconds": 1.0}
            for t in (0, 1) for n in (2, 4) for m in ("frozen", "cnn")][:-1]  # trial 1 stops
    report = {"settings": {"model": "m", "data": "d", "task": None, "n_per_class": [2, 4],
                           "trials": 3, "methods": ["frozen", "cnn"], "n_test": 4},
              "model": {"arch": "lwm-spectro-tiny"}, "classes": CLASSES, "chance": 1 / 3,
              "notes": [], "runs": runs, "summary": summarise(runs)}
    md = table(report)
    assert "1 of 3 trials and 1 interrupted (in the rows it reached)" in md, md
    assert md.count("±") == 2 * 3        # rows with two trials: N = 2 both, N = 4 frozen


@pytest.mark.parametrize("argv, message", [
    (["--few-shot", "2,x"], r"--few-shot 2,x: 'x' is not a whole number >= 1"),
    (["--few-shot", "0"], r"--few-shot 0: '0' is not a whole number >= 1"),
    (["--few-shot", "2", "--trials", "0"], r"--trials 0: must be >= 1"),
    (["--few-shot", "2", "--methods", "frozen,svm"], r"--methods: unknown method 'svm'"),
    (["--few-shot", "2,20"], r"class 'low' has 12 examples, too few for 4 test \+ 3 "
                             r"validation \+ 20 training per class; the largest N/class "
                             r"that fits is 5"),
    # A shipped model's name resolves as with --scenes; it is a SpectrumFM checkpoint.
    (["--few-shot", "2", "--model", "spectrumfm-tiny"], r"holds a spectrumfm-tiny checkpoint; "
                                                        r"the few-shot protocol needs an LWM"),
    (["--few-shot", "2", "--data", "ONE"], r"only one class \('tone'\)"),
    (["--few-shot", "2", "--out", ""], r"--few-shot needs --data .* and --out"),
])
def test_009_bad_input_is_one_line_and_exit_2(tiny, capsys, argv, message):
    defaults = {"--model": str(tiny["ckpt"]), "--data": tiny["data"],
                "--out": str(tiny["root"] / "bad"), "--n-test": "4", "--n-val": "3",
                "--device": "cpu"}
    for i in range(0, len(argv), 2):
        defaults.pop(argv[i], None)
    if "ONE" in argv:
        one = tiny["root"] / "one"
        spec = f"shards:{one}" if one.exists() else _shards(one, ["tone"], 20)
        argv = [spec if a == "ONE" else a for a in argv]
    rc, _, err = _cli(capsys, *argv, *[x for kv in defaults.items() for x in kv])
    assert rc == 2, err
    assert err.count("\n") == 1 and re.match(r"spectrumfm: error: .*" + message, err), err


@pytest.mark.parametrize("argv, message", [
    (["--few-shot", "2", "--out", "OUT", "--split", "all"],
     "--split: only used when scoring an adapter on --data, not with --few-shot"),
    (["--task", "snr-mobility"],
     "--task: only used with --few-shot, not when scoring an adapter on --data"),
    (["--scenes", "2", "--trials", "3"], "--trials: only used with --few-shot, not with --scenes"),
    (["--channels", "8"],
     "--channels: only used with --scenes, not when scoring an adapter on --data"),
])
def test_009b_options_of_another_mode_are_refused_not_ignored(tiny, capsys, argv, message):
    argv = [str(tiny["root"] / "o") if a == "OUT" else a for a in argv]
    rc, _, err = _cli(capsys, "--model", tiny["ckpt"], "--data", tiny["data"], *argv)
    assert rc == 2 and err == f"spectrumfm: error: {message}\n", err


def test_010_a_mixture_checkpoint_runs_without_finetuned(tiny, capsys):
    from spectrumfm.models import lwm_spectro_moe
    experts = {k: create_model("lwm-spectro-tiny", **TINY) for k in ("a", "b")}
    router = Router(RouterConfig(n_experts=2, n_frames=16, n_fft=16, patch_size=4,
                                 d_model=16, ff_dim=32, n_heads=2, n_layers=1))
    ckpt = save_pretrained(tiny["root"] / "moe", LWMSpectroMoE(experts, router,
                                                               expert_arch="lwm-spectro-tiny"),
                           arch=lwm_spectro_moe.MOE_ARCH)
    out = tiny["root"] / "moe-run"
    rc, stdout, err = _cli(capsys, "--few-shot", 2, "--trials", 1, "--model", ckpt, "--data",
                           tiny["data"], "--out", out, "--n-test", 4, "--epochs", 1,
                           "--device", "cpu")
    assert rc == 0, err
    assert "note: fine-tuning a mixture of experts is not offered" in err
    report = json.loads((out / "few_shot.json").read_text())
    assert report["model"]["kind"] == "moe"
    assert report["settings"]["methods"] == ["frozen", "linear", "cnn"]
    assert {r["method"] for r in report["runs"]} == {"frozen", "linear", "cnn"}
    assert "Note: fine-tuning a mixture of experts is not offered" in stdout
    rc, _, err = _cli(capsys, "--few-shot", 2, "--methods", "finetuned", "--model", ckpt,
                      "--data", tiny["data"], "--out", out, "--device", "cpu")
    assert rc == 2 and err.count("\n") == 1, err
    assert err.endswith("finetuned is not offered for it (use frozen, linear or cnn)\n")
