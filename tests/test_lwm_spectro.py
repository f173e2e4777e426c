"""LWM-Spectro: spectrogram features, encoder, objectives, head, router, MoE, save/load.

CPU only and small: each registered size runs one batch of 2 images at its own 128 x 128
size; everything else uses the tiny model on 32 x 32 images (16 tokens of 8 x 8) or a router
on 16 x 16 images, so the whole file takes seconds.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from spectrumfm.models import (LWMSpectro, LWMSpectroConfig, LWMSpectroMoE, ResCNNHead, Router,
                               RouterConfig, create_model, list_models, supcon_loss)
from spectrumfm.models.patch_transformer import patchify, unpatchify
from spectrumfm.spectrogram import (corpus_stats, frames_for_samples, normalise_db,
                                    samples_for_frames, spectrogram_db, spectrogram_image)

LWM_SIZES = [name for name in list_models() if name.startswith("lwm-spectro-")]
# 32 x 32 images in 8 x 8 patches: 16 tokens, a step in milliseconds.
SMALL = dict(n_frames=32, n_fft=32, win_length=32, hop=16)
FAMILIES = ("wifi", "lte", "nr")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # One OpenMP thread: steady on a shared two-core machine and as fast for small batches.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tone(k_bin, n_fft=128, n=None, dtype=torch.complex64):
    n = samples_for_frames() if n is None else n
    t = torch.arange(n, dtype=torch.float64)
    return torch.exp(2j * torch.pi * k_bin / n_fft * t).to(dtype)


def _noise(*shape, seed=0, dtype=torch.complex64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _small(seed=0, **kw) -> LWMSpectro:
    torch.manual_seed(seed)
    return create_model("lwm-spectro-tiny", **{**SMALL, **kw})


def _images(batch, size=32, seed=0):
    return torch.randn(batch, size, size, generator=torch.Generator().manual_seed(seed))


# ---- spectrogram features -----------------------------------------------------------------

@pytest.mark.parametrize("k", [-64, -32, -1, 0, 16, 63])
def test_001_tone_lands_in_its_bin(k):
    db = spectrogram_db(_tone(k))
    assert db.shape == (128, 128) and db.dtype == torch.float32
    # fftshifted: column 64 is DC, column 64 + k the frequency k fs / 128, in every frame.
    assert (db.argmax(dim=-1) == 64 + k).all()
    # Coherent gain of the Hann window over its energy: 10 log10((sum w)^2 / sum w^2).
    w = torch.hann_window(128, dtype=torch.float64)
    gain = 10 * np.log10(float(w.sum() ** 2 / (w ** 2).sum()))
    assert db.max().item() == pytest.approx(gain, abs=1e-3)


def test_002_white_noise_reads_its_power():
    # Power over the window's energy: unit-power noise averages 1 (0 dB) per bin, 100 -> 20 dB.
    x = _noise(samples_for_frames())
    for window in ("hann", "hamming", "blackman", "rectangular"):
        p = 10 ** (spectrogram_db(x, window=window) / 10)
        assert p.mean().item() == pytest.approx(1.0, rel=0.05), window
    assert spectrogram_db(10 * x).mean().item() == pytest.approx(
        spectrogram_db(x).mean().item() + 20, abs=1e-3)


def test_003_shapes_layouts_and_frame_counts():
    S = samples_for_frames()
    assert S == 8256 == samples_for_frames(128, 128, 64)
    assert frames_for_samples(S) == 128 and frames_for_samples(S + 63) == 128
    assert frames_for_samples(S + 64) == 129 and frames_for_samples(127) == 0
    x = _noise(2, 3, S)
    db = spectrogram_db(x)
    assert db.shape == (2, 3, 128, 128)
    assert torch.allclose(spectrogram_db(torch.view_as_real(x)), db, atol=1e-4)
    assert torch.allclose(db[1, 2], spectrogram_db(x[1, 2]), atol=1e-4)   # no batch coupling
    assert spectrogram_db(x[0, 0].to(torch.complex128)).dtype == torch.float64
    wide = spectrogram_db(x[0, 0, :samples_for_frames(10, 128, 32)], n_fft=256, hop=32)
    assert wide.shape == (10, 256)              # frames of win_length samples, as eq. 8
    padded = spectrogram_db(_tone(20, n_fft=256, n=416), n_fft=256, hop=32)
    assert (padded.argmax(dim=-1) == 128 + 20).all()          # zero-padded FFT, finer bins
    assert torch.isfinite(spectrogram_db(torch.zeros(S, dtype=torch.complex64))).all()


def test_004_normalisation_uses_the_given_statistics():
    x = _noise(2, samples_for_frames(), seed=1)
    db = spectrogram_db(x)
    img = spectrogram_image(x, mean=-3.0, std=7.0)
    assert torch.allclose(img, (db + 3.0) / 7.0, atol=1e-5)
    assert torch.equal(normalise_db(db, -3.0, 7.0), (db + 3.0) / 7.0)
    # Fixed statistics keep the level: 20 dB more power shifts every pixel by 20 / std,
    # where per-image z-scoring would have given the same image twice.
    louder = spectrogram_image(10 * x, mean=-3.0, std=7.0)
    assert torch.allclose(louder - img, torch.full_like(img, 20 / 7.0), atol=1e-4)


def test_005_corpus_stats_over_batches():
    chunks = [torch.randn(n, 8, 8, generator=torch.Generator().manual_seed(n)) * 6 + 40
              for n in (1, 5, 3)]
    mean, std = corpus_stats(iter(chunks))
    everything = torch.cat([c.flatten() for c in chunks]).double()
    assert mean == pytest.approx(everything.mean().item(), rel=1e-12)
    assert std == pytest.approx(everything.std(unbiased=False).item(), rel=1e-12)
    assert isinstance(mean, float) and isinstance(std, float)
    with pytest.raises(ValueError, match="no spectrogram"):
        corpus_stats([])
    with pytest.raises(ValueError, match="constant"):
        corpus_stats([torch.full((4, 4), 3.0)])
    with pytest.raises(ValueError, match="non-finite"):
        corpus_stats([torch.tensor([1.0, float("nan")])])


def test_006_spectrogram_bad_arguments():
    x = _noise(samples_for_frames())
    with pytest.raises(ValueError, match="unknown window"):
        spectrogram_db(x, window="kaiser")
    with pytest.raises(ValueError, match="positive"):
        spectrogram_db(x, hop=0)
    with pytest.raises(ValueError, match="at least win_length"):
        spectrogram_db(x, n_fft=64)
    with pytest.raises(ValueError, match="fewer than one window"):
        spectrogram_db(x[:100])
    with pytest.raises(ValueError, match="I/Q last"):
        spectrogram_db(torch.zeros(2, 300))
    with pytest.raises(TypeError):
        spectrogram_db(torch.zeros(300, 2, dtype=torch.int16))
    with pytest.raises(ValueError, match="std"):
        normalise_db(torch.zeros(3), 0.0, 0.0)


# ---- encoder and objectives ---------------------------------------------------------------

@pytest.mark.parametrize("name", LWM_SIZES)
def test_010_every_size_forward_backward(name):
    torch.manual_seed(0)
    m = create_model(name)
    c = m.config
    images = _images(2, size=128)
    with torch.no_grad():
        tokens = m.eval().forward_encoder(images)
    assert tokens.shape == (2, c.n_tokens, c.d_model) and torch.isfinite(tokens).all()
    assert ResCNNHead(c.d_model, 5).eval()(tokens).shape == (2, 5)
    m.train()
    out = m.forward_pretrain(images, labels=torch.tensor([3, 3]),
                             generator=torch.Generator().manual_seed(1))
    assert set(out) == {"loss", "loss_recon", "loss_cont"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    assert torch.allclose(out["loss"], c.w_recon * out["loss_recon"] + c.w_cont * out["loss_cont"])
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    # Stage 1 (eq. 21): no labels, reconstruction only.
    with torch.no_grad():
        assert set(m.forward_pretrain(images)) == {"loss", "loss_recon"}


def test_011_paper_size_is_table_one():
    m = create_model("lwm-spectro-paper")
    c = m.config
    assert (c.n_frames, c.n_fft, c.patch_size, c.n_tokens) == (128, 128, 4, 1024)
    assert (c.n_layers, c.d_model, c.n_heads) == (12, 128, 8)
    assert (c.mask_ratio, c.n_masked, c.temperature, c.w_recon, c.w_cont) == (
        0.7, 717, 0.2, 1.0, 0.3)
    encoder = sum(p.numel() for p in m.encoder.parameters())
    total = sum(p.numel() for p in m.parameters())
    print(f"lwm-spectro-paper: {encoder:,} encoder parameters, {total:,} in all")
    assert (encoder, total) == (2_512_768, 2_531_472)
    tiny = create_model("lwm-spectro-tiny").config
    assert (tiny.n_frames, tiny.n_fft, tiny.n_tokens) == (128, 128, 256)


@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.25])
def test_012_mask_hides_exactly_the_requested_share(ratio):
    for m in (_small(), create_model("lwm-spectro-tiny")):
        N = m.config.n_tokens
        images = torch.zeros(64, m.config.n_frames, m.config.n_fft)
        mask = m.mask_patches(images, ratio, generator=torch.Generator().manual_seed(0))
        assert mask.shape == (64, N) and mask.dtype == torch.bool
        assert (mask.sum(dim=1) == round(ratio * N)).all()
        # Every position gets hidden somewhere, and the rows differ (16 tokens allow few
        # distinct masks at 0.25, so a couple of repeats among 64 rows are expected).
        assert mask.any(dim=0).all() and len({tuple(r.tolist()) for r in mask}) > 56
        again = m.mask_patches(images, ratio, generator=torch.Generator().manual_seed(0))
        assert torch.equal(mask, again)
    default = m.mask_patches(images)                       # config.mask_ratio = 0.7
    assert (default.sum(dim=1) == m.config.n_masked).all()
    with pytest.raises(ValueError, match="at least one"):
        _small().mask_patches(images[:, :32, :32], 0.01)   # round(0.16) = 0 of 16


def test_013_encoder_never_sees_masked_pixels():
    m = _small().eval()
    images = _images(4)
    mask = m.mask_patches(images, generator=torch.Generator().manual_seed(2))
    patches = patchify(images, 8)
    patches[mask] = torch.randn(int(mask.sum()), 64) * 100      # rewrite every hidden patch
    scrambled = unpatchify(patches, m.config.grid, 8)
    assert torch.equal(patchify(scrambled, 8), patches)        # the inverse really inverts
    with torch.no_grad():
        assert torch.equal(m.forward_encoder(images, mask), m.forward_encoder(scrambled, mask))
        assert not torch.allclose(m.forward_encoder(images), m.forward_encoder(scrambled))


def test_014_masked_loss_ignores_unmasked_patches():
    m = _small()
    images = _images(3)
    target = m.patchify(images)
    mask = m.mask_patches(images, generator=torch.Generator().manual_seed(3))
    pred = torch.randn(target.shape, generator=torch.Generator().manual_seed(4))
    base = m.masked_loss(target, pred, mask)
    # Per-pixel MSE over the masked patches only, by hand.
    assert torch.allclose(base, ((pred - target) ** 2)[mask].mean())
    changed = pred.clone()
    changed[~mask] = float("inf")
    changed.requires_grad_(True)
    loss = m.masked_loss(target, changed, mask)
    assert torch.equal(loss, base)
    loss.backward()
    assert torch.isfinite(changed.grad).all() and not changed.grad[~mask].any()
    moved = pred.clone()
    moved[mask] += 1.0                                          # a masked patch does count
    assert not torch.equal(m.masked_loss(target, moved, mask), base)


def test_015_supcon_matches_a_hand_computed_example():
    emb = np.array([[2.0, 0.0], [0.6, 0.8], [0.0, 3.0], [-1.0, 0.1], [0.8, -0.6]])
    labels = [0, 0, 1, 1, 2]            # the last anchor has no positive and is left out
    tau = 0.2
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    per_anchor = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(np.exp(z[i] @ z[a] / tau) for a in others)
        per_anchor.append(np.mean([-np.log(np.exp(z[i] @ z[p] / tau) / denom)
                                   for p in positives]))
    expected = np.mean(per_anchor)
    got = supcon_loss(torch.tensor(emb), torch.tensor(labels), temperature=tau)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Scale-free (the embeddings are normalised first) and the module's default is tau = 0.2.
    assert torch.allclose(supcon_loss(5 * torch.tensor(emb), torch.tensor(labels)), got)


def test_016_supcon_edge_cases():
    emb = torch.randn(4, 8, requires_grad=True)
    lonely = supcon_loss(emb, torch.tensor([0, 1, 2, 3]))
    assert lonely.item() == 0.0
    lonely.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))
    # Two tight clusters far apart at low temperature: each anchor's one positive takes all
    # the probability, so the loss vanishes.
    tight = torch.tensor([[1.0, 0.0], [1.0, 1e-3], [-1.0, 0.0], [-1.0, 1e-3]])
    assert supcon_loss(tight, torch.tensor([0, 0, 1, 1]), 0.05).item() < 1e-6
    with pytest.raises(ValueError, match="labels"):
        supcon_loss(torch.randn(4, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]), temperature=0.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        supcon_loss(torch.randn(4), torch.tensor([0, 0, 1, 1]))


def test_017_small_model_fits_one_batch():
    m = _small()
    images = _images(8, seed=5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for step in range(300):         # 72 to 84 steps were needed over 4 model seeds
        # The same mask every step: memorising one batch must drive both losses down.
        out = m.forward_pretrain(images, labels, generator=torch.Generator().manual_seed(0))
        first = first or {k: v.item() for k, v in out.items()}
        if out["loss_recon"].item() < first["loss_recon"] / 3:
            break
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss_recon"].item() < first["loss_recon"] / 3, (first, step)
    assert out["loss_cont"].item() < first["loss_cont"], (first, step)


def test_018_head_shapes_size_and_batch_independence():
    torch.manual_seed(0)
    head = ResCNNHead(64, 5).eval()
    tokens = torch.randn(4, 16, 64)
    with torch.no_grad():
        logits = head(tokens)
        assert logits.shape == (4, 5)
        assert torch.allclose(head(tokens[2:3]), logits[2:3], atol=1e-6)
    assert sum(p.numel() for p in head.parameters()) < 20_000
    with pytest.raises(ValueError, match=r"\(B, N, 64\)"):
        head(torch.randn(4, 16, 32))
    with pytest.raises(ValueError, match="odd"):
        ResCNNHead(64, 5, kernel_size=4)


# ---- router and mixture of experts --------------------------------------------------------

def _family_images(family, n, seed):
    """16 x 16 images of noise with a bright band of columns (frequencies) per family."""
    x = torch.randn(n, 16, 16, generator=torch.Generator().manual_seed(seed))
    x[:, :, 5 * family:5 * family + 5] += 4.0
    return x


def _mixed(n_per_family, seed):
    images = torch.cat([_family_images(k, n_per_family, seed + k) for k in range(3)])
    return images, torch.arange(3).repeat_interleave(n_per_family)


@pytest.fixture(scope="module")
def trained_router():
    torch.manual_seed(0)
    router = Router(RouterConfig(n_experts=3, n_frames=16, n_fft=16, patch_size=4))
    images, labels = _mixed(24, seed=10)
    opt = torch.optim.AdamW(router.parameters(), lr=3e-3)
    for _ in range(40):         # 100 % on 600 unseen images for each of 10 seeds tried
        loss = F.cross_entropy(router(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return router.eval()


def _experts():
    return {name: _small(seed=i, n_frames=16, n_fft=16, win_length=16, hop=8).eval()
            for i, name in enumerate(FAMILIES)}


def test_020_router_picks_the_right_expert(trained_router):
    images, labels = _mixed(20, seed=100)      # examples the router has not seen
    with torch.no_grad():
        probs = trained_router.probs(images)
        _, moe_probs = LWMSpectroMoE(_experts(), trained_router)(images)
    assert probs.shape == (60, 3) and torch.allclose(probs.sum(-1), torch.ones(60))
    assert torch.equal(probs.argmax(-1), labels)
    assert torch.equal(moe_probs, probs)


def test_021_top1_output_equals_the_chosen_expert_alone(trained_router):
    experts = _experts()
    moe = LWMSpectroMoE(experts, trained_router).eval()
    # wifi and nr images only: the lte expert must not run at all.
    images = torch.cat([_family_images(0, 3, 7), _family_images(2, 2, 8)])[[0, 3, 1, 4, 2]]
    seen = {name: [] for name in FAMILIES}
    for name, e in experts.items():
        e.encoder.patch_embed.register_forward_pre_hook(
            lambda mod, args, name=name: seen[name].append(args[0].shape[0]))
    with torch.no_grad():
        tokens, probs = moe(images)
    choice = probs.argmax(-1)
    assert choice.tolist() == [0, 2, 0, 2, 0]
    assert seen == {"wifi": [3], "lte": [], "nr": [2]}       # one grouped call per expert
    assert tokens.shape == (5, 4, 64)
    with torch.no_grad():
        for i, k in enumerate(choice.tolist()):
            alone = experts[FAMILIES[k]].forward_encoder(images[i:i + 1])
            assert torch.allclose(tokens[i:i + 1], alone, atol=1e-5)
    assert moe.active_parameters() < sum(p.numel() for p in moe.parameters())
    empty, _ = moe(images[:0])
    assert empty.shape == (0, 4, 64)


def test_022_moe_rejects_mismatched_parts(trained_router):
    experts = _experts()
    with pytest.raises(ValueError, match="2 outputs for 3 experts"):
        LWMSpectroMoE(experts, Router(RouterConfig(n_experts=2, n_frames=16, n_fft=16)))
    with pytest.raises(ValueError, match="spec_mean"):
        LWMSpectroMoE({**experts, "nr": _small(n_frames=16, n_fft=16, win_length=16, hop=8,
                                               spec_mean=-30.0)}, trained_router)
    with pytest.raises(ValueError, match="router reads 128 x 128"):
        LWMSpectroMoE(experts, Router(RouterConfig(n_experts=3)))
    with pytest.raises(ValueError, match="at least one expert"):
        LWMSpectroMoE({}, trained_router)


# ---- configs, registry, save/load -------------------------------------------------------------

def test_030_save_load_round_trip(tmp_path, trained_router):
    m = _small().eval()
    path = tmp_path / "model.safetensors"
    save_file(m.state_dict(), str(path))
    config = json.loads(json.dumps(m.config.to_dict()))        # as config.json holds it
    torch.manual_seed(123)        # different initial weights, all to be overwritten
    m2 = LWMSpectro(LWMSpectroConfig.from_dict(config)).eval()
    result = m2.load_state_dict(load_file(str(path)), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    images, labels = _images(3), torch.tensor([0, 0, 1])
    with torch.no_grad():
        assert torch.equal(m.forward_encoder(images), m2.forward_encoder(images))
        a, b = (x.forward_pretrain(images, labels, torch.Generator().manual_seed(9))
                for x in (m, m2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The MoE saves as one file, experts under their family names.
    moe = LWMSpectroMoE(_experts(), trained_router).eval()
    save_file(moe.state_dict(), str(tmp_path / "moe.safetensors"))
    torch.manual_seed(7)
    experts2 = {name: LWMSpectro(LWMSpectroConfig.from_dict(e.config.to_dict()))
                for name, e in _experts().items()}
    router2 = Router(RouterConfig.from_dict(trained_router.config.to_dict()))
    moe2 = LWMSpectroMoE(experts2, router2).eval()
    moe2.load_state_dict(load_file(str(tmp_path / "moe.safetensors")), strict=True)
    assert any(k.startswith("experts.lte.encoder.") for k in moe2.state_dict())
    images = _mixed(2, seed=3)[0]
    with torch.no_grad():
        assert all(torch.equal(x, y) for x, y in zip(moe(images), moe2(images)))


def test_031_registry_and_config_errors():
    assert {"lwm-spectro-tiny", "lwm-spectro-paper"} <= set(LWM_SIZES)
    with pytest.raises(ValueError, match="d_modle"):
        create_model("lwm-spectro-tiny", d_modle=32)
    with pytest.raises(ValueError, match="n_heads"):
        create_model("lwm-spectro-tiny", n_heads=5)
    with pytest.raises(ValueError, match="8 x 8 patches"):
        create_model("lwm-spectro-tiny", n_frames=100)
    with pytest.raises(ValueError, match="mask_ratio"):
        create_model("lwm-spectro-tiny", mask_ratio=1.0)
    with pytest.raises(ValueError, match="window"):
        create_model("lwm-spectro-tiny", window="kaiser")
    with pytest.raises(ValueError, match="spec_std"):
        create_model("lwm-spectro-tiny", spec_std=0.0)
    with pytest.raises(ValueError, match="unknown RouterConfig keys"):
        RouterConfig.from_dict({"n_expert": 3})
    with pytest.raises(ValueError, match="d_model 60"):
        RouterConfig(d_model=60, n_heads=8)
    with pytest.raises(ValueError, match=r"\(B, 32, 32\)"):
        _small().forward_encoder(torch.zeros(2, 32, 16))


def test_032_model_features_follow_its_config():
    m = create_model("lwm-spectro-tiny", spec_mean=-10.0, spec_std=5.0).eval()
    iq = _noise(2, samples_for_frames(), seed=4)
    images = m.features(iq)
    assert images.shape == (2, 128, 128)
    assert torch.equal(images, spectrogram_image(iq, -10.0, 5.0))
    with torch.no_grad():
        assert m.forward_encoder(images).shape == (2, 256, 64)
