"""Training engine, checkpoints and `spectrumfm pretrain`, on CPU at tiny sizes.

The pretraining command runs in-process on a few hundred random QPSK windows written as the
generator's HDF5 shards; engine behaviours (resume, early stopping, non-finite loss) use
models of a few thousand parameters. The torchrun smoke test starts two real gloo processes.
"""

import json
import math
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from spectrumfm.data import open_dataset, split_indices
from spectrumfm.errors import InputError
from spectrumfm.features import iq_features
from spectrumfm.models import create_model
from spectrumfm.train import (NonFiniteLossError, TrainConfig, fit, load_pretrained,
                              load_train_state, save_pretrained, warmup_cosine)
from spectrumfm.train import checkpoint as checkpoint_module
from spectrumfm.train import engine as engine_module
from spectrumfm_apps import pretrain
from spectrumfm_apps.pretrain import get_args_parser, main, pretrain_loss

CONFIG_KEYS = {"arch", "model_config", "features", "code_version", "command", "created"}
PRETRAIN_EXTRA = {"stage", "data", "data_classes", "samp_rate", "split", "metrics"}


def write_shards(folder: Path, n=160, length=128, seed=0) -> str:
    """Random QPSK with a little noise, as `spectrumfm generate` writes it; 2 shards."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    classes = ["qpsk-a", "qpsk-b"]
    for k, rows in enumerate(np.array_split(np.arange(n), 2)):
        sym = rng.integers(0, 4, (len(rows), length))
        noise = rng.standard_normal((len(rows), length, 2)) @ np.array([1, 1j]) * 0.1
        with h5py.File(folder / f"shard-{k:05d}.h5", "w") as f:
            f["iq"] = (np.exp(1j * (np.pi / 4 + np.pi / 2 * sym)) + noise).astype(np.complex64)
            f["label"] = rng.integers(0, 2, len(rows)).astype(np.int64)
            f["snr_db"] = rng.choice([0.0, 10.0], len(rows)).astype(np.float32)
            f.attrs["classes"] = json.dumps(classes)
            f.attrs["samp_rate"] = 1e6
    (folder / "dataset.json").write_text(json.dumps({"classes": classes, "samp_rate": 1e6}))
    return f"shards:{folder}"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Models this small gain nothing from intra-op threads, and on a loaded machine OpenMP
    # threads spinning against each other make each step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("data") / "gen")


def expected_split(spec):
    with open_dataset(spec) as ds:
        return split_indices(ds.labels, ds.snr_db, seed=0, groups=ds.frame_index)


def pretrain_args(data, out, *extra):
    return get_args_parser().parse_args(
        ["--model", "spectrumfm-tiny", "--data", data, "--out", str(out), "--batch", "64",
         "--warmup", "2", "--device", "cpu", "--no-progress", "--epochs", "1", *extra])


@pytest.fixture(scope="module")
def pretrained(shards, tmp_path_factory):
    """One finished 1-epoch pretraining run, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "fm"
    assert main(pretrain_args(shards, out)) == 0
    return out


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return create_model("spectrumfm-tiny", d_model=16, ff_dim=32, n_heads=2, n_layers=1,
                        window_len=32)


def iq_windows(n=48, length=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, length, dtype=torch.complex64, generator=g))


def batch_loss(model, batch, generator=None):
    return pretrain_loss(model, batch[0], generator)


def quick_cfg(**kw):
    return TrainConfig(**{"batch_size": 16, "warmup_steps": 2, "progress": False,
                          "patience": 0, **kw})


# ---- pretrain command and checkpoints ---------------------------------------------------

def test_001_pretrain_writes_checkpoint_that_rebuilds_itself(pretrained, capsys):
    names = {p.name for p in pretrained.iterdir()}
    assert names == {"model.safetensors", "config.json", "README.md", "train_state.pt",
                     "run_config.json"}
    meta = json.loads((pretrained / "config.json").read_text())
    assert set(meta) == CONFIG_KEYS | PRETRAIN_EXTRA
    assert meta["arch"] == "spectrumfm-tiny" and meta["model_config"]["d_model"] == 64
    assert meta["features"] == {"recipe": "amp-phase-minmax", "window_len": 128,
                                "in_features": 2}
    assert meta["split"] == {"fractions": [0.8, 0.1, 0.1], "seed": 0}
    assert meta["metrics"]["epoch"] == 1 and np.isfinite(meta["metrics"]["val_loss"])
    assert meta["command"] == shlex.join(sys.argv)
    run_cfg = json.loads((pretrained / "run_config.json").read_text())
    assert run_cfg["train"]["batch_size"] == 64 and run_cfg["world_size"] == 1
    # The split every command shares, so the test share never reaches pretraining.
    train, val, test = expected_split(meta["data"])
    assert (run_cfg["train_windows"], run_cfg["val_windows"]) == (len(train), len(val))

    model, cfg = load_pretrained(pretrained)
    assert cfg == meta and not model.training
    # One epoch: the best checkpoint is the last state, so both must give identical outputs.
    last = create_model("spectrumfm-tiny")
    last.load_state_dict(load_train_state(pretrained)["model"])
    feats = iq_features(torch.randn(3, 128, dtype=torch.complex64))
    with torch.no_grad():
        assert torch.equal(model.forward_encoder(feats), last.eval().forward_encoder(feats))


def test_002_save_load_round_trip_is_exact(tmp_path):
    model = tiny_model().eval()
    save_pretrained(tmp_path, model, arch="spectrumfm-tiny", extra={"classes": ["a", "b"]})
    loaded, meta = load_pretrained(tmp_path / "config.json")      # a file in it works too
    assert meta["classes"] == ["a", "b"] and meta["model_config"] == model.config.to_dict()
    feats = iq_features(torch.randn(4, 32, dtype=torch.complex64))
    with torch.no_grad():
        assert torch.equal(loaded.forward_encoder(feats), model.forward_encoder(feats))
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert stored.keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match="overwrite"):
        save_pretrained(tmp_path, model, arch="x", extra={"arch": "y"})


@pytest.mark.parametrize("change, expect", [
    ({"d_model": 32}, r"shape mismatch \(checkpoint vs config\) input_proj\.weight "
                      r"\(16, 2, 1\) vs \(32, 2, 1\)"),
    ({"n_layers": 3}, r"missing blocks\.\{1,2\}\.\*$"),
    ({"ff_dim": 64}, r"blocks\.0\.ff1\.fc1\.weight \(32, 16\) vs \(64, 16\)"),
])
def test_003_tampered_config_is_one_line_listing_mismatches(tmp_path, change, expect):
    save_pretrained(tmp_path, tiny_model(), arch="spectrumfm-tiny")
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["model_config"].update(change)
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError) as exc:
        load_pretrained(tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "checkpoint does not match its config" in msg
    assert re.search(expect, msg), msg


def test_004_unexpected_keys_are_named(tmp_path):
    save_pretrained(tmp_path, create_model("spectrumfm-tiny", n_layers=2, d_model=16,
                                           ff_dim=32, n_heads=2), arch="spectrumfm-tiny")
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["model_config"]["n_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"unexpected blocks\.1\.\*$"):
        load_pretrained(tmp_path)


def test_005_missing_or_malformed_files_name_the_file(tmp_path):
    save_pretrained(tmp_path, tiny_model(), arch="spectrumfm-tiny")
    weights, config = tmp_path / "model.safetensors", tmp_path / "config.json"
    good = weights.read_bytes()
    weights.write_bytes(b"not safetensors at all")
    with pytest.raises(InputError, match="model.safetensors: not a readable safetensors"):
        load_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(InputError, match=r"model\.safetensors: missing"):
        load_pretrained(tmp_path)
    weights.write_bytes(good)
    meta = json.loads(config.read_text())
    config.write_text(json.dumps({**meta, "arch": "no-such-model"}))
    with pytest.raises(InputError, match="config.json: unknown model 'no-such-model'"):
        load_pretrained(tmp_path)
    config.write_text(json.dumps({**meta, "features": {"recipe": "iq-raw"}}))
    with pytest.raises(InputError, match="trained on 'iq-raw' features"):
        load_pretrained(tmp_path)
    config.write_text("{ not json")
    with pytest.raises(InputError, match="config.json: malformed JSON"):
        load_pretrained(tmp_path)
    config.unlink()
    with pytest.raises(InputError, match="config.json: missing"):
        load_pretrained(tmp_path)
    with pytest.raises(InputError, match="no such checkpoint folder"):
        load_pretrained(tmp_path / "nowhere")


def test_006_torch_load_is_only_ever_called_with_weights_only():
    for module in (checkpoint_module, engine_module, pretrain):
        source = Path(module.__file__).read_text()
        assert "import pickle" not in source
        for call in re.finditer(r"torch\.load\(", source):
            args = source[call.end():source.index(")", call.end())]
            assert "weights_only=True" in args, f"{module.__name__}: torch.load({args})"
    assert "torch.load(" in Path(checkpoint_module.__file__).read_text()


# ---- engine behaviours ----------------------------------------------------------------

class Interrupting(TensorDataset):
    """Raises KeyboardInterrupt at batch ``at`` (0-based), as if the run were killed."""

    def __init__(self, base, at):
        super().__init__(*base.tensors)
        self.calls, self.at = 0, at

    def __getitem__(self, rows):
        self.calls += 1
        if self.calls > self.at:
            raise KeyboardInterrupt
        return super().__getitem__(rows)


def test_007_resume_continues_exactly_where_it_stopped(tmp_path):
    train, val = iq_windows(48), iq_windows(16, seed=1)
    cfg = quick_cfg(epochs=3)   # 3 steps per epoch
    straight = tiny_model()
    whole = fit(straight, batch_loss, train, val, cfg, out_dir=tmp_path / "a")

    with pytest.raises(KeyboardInterrupt):   # killed in the middle of epoch 2
        fit(tiny_model(), batch_loss, Interrupting(train, at=4), val, cfg,
            out_dir=tmp_path / "b")
    assert load_train_state(tmp_path / "b")["epoch"] == 1
    resumed = tiny_model(seed=123)   # a fresh process builds fresh weights
    cfg.resume = True
    part = fit(resumed, batch_loss, train, val, cfg, out_dir=tmp_path / "b")
    assert part.resumed_from == 1 and part.epochs_completed == whole.epochs_completed == 3
    assert part.steps == whole.steps == 9 and part.best_val == whole.best_val
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    run_cfg = json.loads((tmp_path / "b" / "run_config.json").read_text())
    assert run_cfg["resumed_from_epoch"] == 1


def test_008_pretrain_resume_and_refusals(shards, pretrained, tmp_path):
    with pytest.raises(InputError, match="already holds a training run; add --resume"):
        main(pretrain_args(shards, pretrained))
    with pytest.raises(InputError, match="train_state.pt: missing: nothing to resume"):
        main(pretrain_args(shards, tmp_path / "empty", "--resume"))
    out = tmp_path / "fm"
    out.mkdir()
    for f in ("model.safetensors", "config.json", "train_state.pt"):
        (out / f).write_bytes((pretrained / f).read_bytes())
    assert main(pretrain_args(shards, out, "--resume", "--epochs", "2")) == 0
    state = load_train_state(out)
    steps_per_epoch = math.ceil(len(expected_split(shards)[0]) / 64)
    assert (state["epoch"], state["step"]) == (2, 2 * steps_per_epoch)
    meta = json.loads((out / "config.json").read_text())
    assert meta["metrics"]["epoch"] in (1, 2)


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))


def test_009_non_finite_loss_stops_naming_the_step(tmp_path):
    calls = []

    def loss_fn(model, batch, generator=None):
        calls.append(1)
        bad = len(calls) == 3
        return (model.p - batch[0].mean()) ** 2 * (float("nan") if bad else 1.0)

    data = TensorDataset(torch.randn(64, 4))
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at step 3 "
                       r"\(epoch 1, batch 3 of 4\); stopped\. .*nothing was saved"):
        fit(Scalar(), loss_fn, data, data, quick_cfg(epochs=2), out_dir=tmp_path)
    assert not (tmp_path / "train_state.pt").exists()   # nothing half-trained was saved


def test_010_early_stopping_on_a_worsening_val_loss(tmp_path):
    # Training pulls p towards 1 while the validation loss, p**2, grows with every epoch:
    # the best epoch is the first and the run stops `patience` epochs later.
    def loss_fn(model, batch, generator=None):
        target = 1.0 if model.training else 0.0
        return (model.p - target) ** 2 + 0 * batch[0].sum()

    data = TensorDataset(torch.zeros(32, 1))
    best = []
    res = fit(Scalar(), loss_fn, data, data, quick_cfg(epochs=20, patience=2, lr=0.05),
              out_dir=tmp_path, on_best=lambda m, metrics: best.append(metrics["epoch"]))
    assert res.stopped_early and res.epochs_completed == 3 and res.best_epoch == 1
    assert best == [1]
    assert load_train_state(tmp_path)["bad_epochs"] == 2


def test_011_warmup_then_cosine():
    f = warmup_cosine(total_steps=110, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    assert all(f(k) >= f(k + 1) for k in range(10, 110))


def test_012_bad_input_is_one_line(shards, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (pretrain_args(shards, tmp_path / "o1", "--model", "spectrumfm-huge"),
         "--model spectrumfm-huge: unknown model"),
        (pretrain_args("hdf9:" + str(tmp_path), tmp_path / "o2"), "unknown dataset kind"),
        (pretrain_args("shards:" + str(tmp_path / "none"), tmp_path / "o3"),
         "no such file or directory"),
        (pretrain_args(shards, a_file), "exists and is not a folder"),
        (pretrain_args(shards, tmp_path / "o4", "--device", "tpu"), "unknown device 'tpu'"),
        (pretrain_args(shards, tmp_path / "o5", "--lr", "0"), "--lr must be > 0"),
    ]
    for args, expect in cases:
        with pytest.raises(InputError, match=re.escape(expect)) as exc:
            main(args)
        assert "\n" not in str(exc.value)


# ---- torchrun ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_013_torchrun_two_gloo_processes(shards, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           pretrain.__file__, "--model", "spectrumfm-tiny", "--data", shards, "--out",
           str(out), "--epochs", "1", "--batch", "32", "--max-windows", "64",
           "--device", "cpu", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "run_config.json", "train_state.pt"]
    summaries = [line for line in res.stdout.splitlines() if line.startswith("pretrained ")]
    assert len(summaries) == 1 and "in 2 processes" in summaries[0], res.stdout
    state = load_train_state(out)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["step"] == 1            # 64 windows / 2 processes / batch 32
    assert json.loads((out / "run_config.json").read_text())["world_size"] == 2
    load_pretrained(out)
