"""SpectrumFM features and model: shapes, objectives, every registered size, save/load.

CPU only and small: the paper-size model runs one batch of 2 windows, everything else uses
the tiny size, so the whole file takes seconds.
"""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from spectrumfm.features import (features_for, iq_features, level_features, minmax_normalise,
                                 windows_from_iq)
from spectrumfm.models import (LORA_TARGETS, GRUHead, LinearHead, SpectrumFMConfig,
                               create_model, list_models)
from spectrumfm.models.spectrumfm import SpectrumFM, sinusoidal_positions

N = 128


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # On a shared two-core machine two OpenMP threads stall behind other processes (a 0.6 s
    # step became 10 s); one thread is as fast for these small batches and stays steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _iq(batch=4, n=N, seed=0, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, generator=g, dtype=dtype)


def _feats(batch=4, seed=0):
    return iq_features(_iq(batch, seed=seed))


def _tiny(**kw):
    torch.manual_seed(0)
    return create_model("spectrumfm-tiny", **kw)


# ---- features ---------------------------------------------------------------------------

def test_001_features_complex_and_real_layouts_agree():
    x = _iq(3)
    f = iq_features(x)
    assert f.shape == (3, N, 2) and f.dtype == torch.float32
    assert torch.equal(f, iq_features(torch.view_as_real(x)))
    # Each channel of each window spans exactly [0, 1] (eq. 1).
    assert torch.allclose(f.amin(dim=1), torch.zeros(3, 2))
    assert torch.allclose(f.amax(dim=1), torch.ones(3, 2))
    # Amplitude order is kept: the loudest sample maps to 1.
    assert torch.equal(f[..., 0].argmax(dim=1), x.abs().argmax(dim=1))


def test_001b_level_features_carry_the_snr_and_keep_the_phase():
    """amp-phase-level: on unit-variance noise the amplitude sits near log1p(0.89)/log(11);
    10 dB more raises it, the phase column is the min-max one of iq_features."""
    x = _iq(8, seed=3)
    x = x / x.abs().pow(2).mean().sqrt()                 # unit noise variance per sample
    f, g = level_features(x), level_features(x * 10 ** 0.5)
    assert f.shape == (8, 128, 2) and f.dtype == torch.float32
    assert 0.2 < f[..., 0].mean() < 0.33 and g[..., 0].mean() > f[..., 0].mean() + 0.2
    assert torch.allclose(f[..., 1], iq_features(x)[..., 1])
    assert features_for(None) is iq_features and features_for("amp-phase-level") is level_features
    with pytest.raises(ValueError, match="unknown feature recipe 'x'; known: amp-phase-minmax"):
        features_for("x")


def test_002_features_keep_float64_and_float32():
    x64 = _iq(2, dtype=torch.complex128)
    f64 = iq_features(x64)
    f32 = iq_features(torch.view_as_real(x64).float())
    assert f64.dtype == torch.float64 and f32.dtype == torch.float32
    assert iq_features(torch.view_as_real(x64)).dtype == torch.float64
    assert torch.allclose(f64.float(), f32, atol=1e-5)
    fb = iq_features(torch.view_as_real(x64).bfloat16())
    assert fb.dtype == torch.bfloat16
    assert torch.allclose(fb.float(), f32, atol=1e-2)


def test_003_constant_window_gives_zeros_not_nan():
    zeros = torch.zeros(2, N, dtype=torch.complex64)
    carrier = torch.full((2, N), 0.5 + 0.5j, dtype=torch.complex64)
    for x in (zeros, carrier, torch.view_as_real(zeros)):
        f = iq_features(x)
        assert torch.isfinite(f).all() and not f.any()
    mixed = minmax_normalise(torch.tensor([[3.0, 3.0, 3.0], [1.0, 2.0, 3.0]]), dim=-1)
    assert torch.equal(mixed, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 1.0]]))
    m = _tiny().eval()
    with torch.no_grad():
        assert torch.isfinite(m.forward_encoder(iq_features(zeros))).all()


def test_004_features_reject_ambiguous_real_layout():
    with pytest.raises(ValueError, match="I/Q last"):
        iq_features(torch.zeros(2, 2, N))       # RadioML 2016 layout must be transposed
    with pytest.raises(TypeError):
        iq_features(torch.zeros(2, N, 2, dtype=torch.int16))


def test_005_windows_from_iq():
    s = torch.arange(300, dtype=torch.float32) * (1 + 1j)
    w = windows_from_iq(s)
    assert w.shape == (2, N) and torch.equal(w[1], s[N:2 * N])
    assert windows_from_iq(s, window_len=N, stride=64).shape == (3, N)   # starts 0, 64, 128
    assert windows_from_iq(s[:10]).shape == (0, N)
    real = windows_from_iq(torch.view_as_real(s))
    assert real.shape == (2, N, 2) and torch.equal(real, torch.view_as_real(w))


# ---- model --------------------------------------------------------------------------------

def test_010_shapes():
    m = _tiny().eval()
    f = _feats(3)
    with torch.no_grad():
        tokens = m.forward_encoder(f)
        assert tokens.shape == (3, N, 64)
        assert m(f).shape == (3, N, 64)
        # A whole 1024-sample frame, beyond the cached positional table.
        assert m.forward_encoder(iq_features(_iq(1, n=1024))).shape == (1, 1024, 64)
        assert GRUHead(64, 11)(tokens).shape == (3, 11)
        assert LinearHead(64, 1)(tokens).shape == (3, 1)
        assert m.reconstruction_error(f).shape == (3,)
    with pytest.raises(ValueError, match=r"\(B, N, 2\)"):
        m.forward_encoder(torch.zeros(3, N))


@pytest.mark.parametrize("name", [n for n in list_models() if n.startswith("spectrumfm-")])
def test_011_forward_backward_every_size(name):
    torch.manual_seed(0)
    m = create_model(name)
    out = m.forward_pretrain(_feats(2), generator=torch.Generator().manual_seed(1))
    assert set(out) == {"loss", "loss_mask", "loss_next"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    weighted = m.config.w_mask * out["loss_mask"] + m.config.w_next * out["loss_next"]
    assert torch.allclose(out["loss"], weighted)
    out["loss"].backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_012_tiny_overfits_one_batch():
    # Short windows keep a step at a few milliseconds; the objective is the same.
    m = _tiny(dropout=0.0, window_len=32)
    f = iq_features(_iq(8, n=32, seed=3))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for step in range(300):         # 54 to 103 steps were needed over model seeds and N
        # The same mask every step: pure memorisation of one batch.
        loss = m.forward_pretrain(f, generator=torch.Generator().manual_seed(0))["loss"]
        first = loss.item() if first is None else first
        if loss.item() < first / 10:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10, (first, loss.item(), step)


def test_013_masked_loss_ignores_unmasked_positions():
    m = _tiny()
    target = _feats(2)
    pred = torch.rand(2, N, 2, generator=torch.Generator().manual_seed(5))
    _, mask = m.random_masking(target, generator=torch.Generator().manual_seed(6))
    base = m.forward_loss(target, pred, mask)
    changed = target.clone()
    changed[~mask] = torch.tensor([float("inf"), -7.0])
    assert torch.equal(m.forward_loss(changed, pred, mask), base)
    changed[mask] += 1.0            # a masked position does count
    assert not torch.equal(m.forward_loss(changed, pred, mask), base)
    # eq. 13 by hand: squared error norm averaged over masked samples.
    expected = ((pred - target) ** 2).sum(-1)[mask].mean()
    assert torch.allclose(base, expected)


def test_014_random_masking():
    m = _tiny()
    f = _feats(64)
    g = torch.Generator().manual_seed(0)
    masked, mask = m.random_masking(f, ratio=1e-4, generator=g)
    assert mask.dtype == torch.bool and mask.shape == (64, N)
    assert (mask.sum(dim=1) >= 1).all()       # every window has a target, even at ratio ~0
    assert not masked[mask].any() and torch.equal(masked[~mask], f[~mask])
    _, mask15 = m.random_masking(f, generator=torch.Generator().manual_seed(1))
    assert abs(mask15.float().mean().item() - 0.15) < 0.03
    _, again = m.random_masking(f, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mask15, again)


def test_015_next_slot_cannot_see_the_last_sample():
    m = _tiny(dropout=0.0)
    encoder_inputs = []
    m.input_proj.register_forward_pre_hook(lambda mod, args: encoder_inputs.append(args[0]))
    f = _feats(2)
    moved = f.clone()
    moved[:, -1] = 1.0 - moved[:, -1]
    with torch.no_grad():
        a = m.forward_pretrain(f, generator=torch.Generator().manual_seed(0))
        b = m.forward_pretrain(moved, generator=torch.Generator().manual_seed(0))
    # Sample N is always hidden, so the encoder input is identical; only the target moved.
    assert torch.equal(encoder_inputs[0], encoder_inputs[1])
    assert not torch.equal(a["loss_next"], b["loss_next"])


def test_016_window_output_does_not_depend_on_batch():
    m = _tiny().eval()
    f = _feats(4)
    with torch.no_grad():
        batched = m.forward_encoder(f)
        single = m.forward_encoder(f[2:3])
    assert torch.allclose(batched[2:3], single, atol=1e-5)


def test_017_save_load_round_trip(tmp_path):
    m = _tiny().eval()
    path = tmp_path / "model.safetensors"
    save_file(m.state_dict(), str(path))
    assert not any(k.startswith("pos") for k in load_file(str(path)))   # derived, not stored
    torch.manual_seed(123)        # different initial weights, all to be overwritten
    m2 = SpectrumFM(SpectrumFMConfig.from_dict(m.config.to_dict())).eval()
    result = m2.load_state_dict(load_file(str(path)), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    f = _feats(3)
    with torch.no_grad():
        assert torch.equal(m.forward_encoder(f), m2.forward_encoder(f))
        errors = [x.reconstruction_error(f, torch.Generator().manual_seed(9)) for x in (m, m2)]
    assert torch.equal(*errors)


def test_018_registry_errors():
    with pytest.raises(ValueError, match="spectrumfm-huge") as err:
        create_model("spectrumfm-huge")
    assert "spectrumfm-tiny" in str(err.value)
    assert {"spectrumfm-tiny", "spectrumfm-small", "spectrumfm-paper"} <= set(list_models())
    with pytest.raises(ValueError, match="d_modle"):
        create_model("spectrumfm-tiny", d_modle=32)
    with pytest.raises(ValueError, match="n_heads"):
        create_model("spectrumfm-tiny", n_heads=5)
    with pytest.raises(ValueError, match="unknown SpectrumFM config keys"):
        SpectrumFMConfig.from_dict({"d_model": 64, "extra": 1})


def test_019_paper_parameter_count():
    # The paper says "about 16 M"; the GLU in the conv module decides the exact figure (see
    # SpectrumFMConfig): 15,840,000 in the encoder, 16,301,572 with both pretraining heads.
    m = create_model("spectrumfm-paper")
    total = sum(p.numel() for p in m.parameters())
    encoder = sum(p.numel() for n, p in m.named_parameters()
                  if n.startswith(("input_proj.", "blocks.")))
    print(f"spectrumfm-paper: {encoder:,} encoder parameters, {total:,} in all")
    assert 15_500_000 <= encoder <= 16_500_000
    assert encoder < total <= 16_500_000


def test_020_lora_targets_name_exactly_the_block_linears_and_pointwise_convs():
    m = _tiny()
    matched, expected = set(), set()
    for name, mod in m.named_modules():
        if any(name == t or name.endswith("." + t) for t in LORA_TARGETS):
            matched.add(name)
        pointwise = isinstance(mod, nn.Conv1d) and mod.kernel_size == (1,)
        if name.startswith("blocks.") and (isinstance(mod, nn.Linear) or pointwise):
            expected.add(name)
    assert matched == expected and len(matched) == 2 * 10   # 2 blocks: 4 attn, 4 ff, 2 conv


def test_021_positional_encoding_is_eq3():
    pe = sinusoidal_positions(N, 64)
    p, i = 5, 3
    assert math.isclose(pe[p, 2 * i].item(), math.sin(p / 10000 ** (2 * i / 64)), abs_tol=1e-6)
    assert math.isclose(pe[p, 2 * i + 1].item(), math.cos(p / 10000 ** (2 * i / 64)), abs_tol=1e-6)
