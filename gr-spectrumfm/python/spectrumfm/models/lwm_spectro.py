"""LWM-Spectro: a Transformer over spectrogram patches (paper §III) and its objectives.

Reads bottom-up: the config, the supervised contrastive loss, the model with its objectives
as named methods (``patchify``, ``mask_patches``, ``forward_encoder``, ``masked_loss``,
``forward_pretrain``) and the downstream head of §III-F; the patch Transformer itself, shared
with the MoE router (:mod:`.lwm_spectro_moe`), is :mod:`.patch_transformer`. Input is the
``(B, T, K)`` image of :func:`spectrumfm.spectrogram.spectrogram_image`; P is the patch
side, N = (T / P)(K / P) the number of tokens, d the model width.

Where this departs from the paper's text, and why:

* **Pre-norm blocks** (``x + f(norm(x))``, then one final norm) where eq. 14 writes post-norm
  (``norm(x + f(x))``). Pre-norm is what ViT and MAE train 12 layers with at lr 5e-4 and a
  short warm-up without loss spikes; the parameter count is the same.
* **Reconstruction targets are the patch pixels** ``s_i``. Eq. 16–17 read as reconstructing
  the patch embeddings ``x_i``, but those are trained too: the encoder could shrink them to
  zero and make the loss vanish. Pixels are MAE's and SimMIM's target.
* **Losses are means:** the masked loss is the mean squared error per pixel over the masked
  patches (eq. 17's squared norm per patch divided by P^2 = 16), the contrastive loss the
  mean over anchors of eq. 19's sum, so neither scales with the patch or batch size and the
  weights 1.0 / 0.3 of Table I keep their balance at any batch size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spectrogram import WINDOWS, samples_for_frames, spectrogram_image
from . import register_model
from .patch_transformer import LORA_TARGETS, PatchEncoder, grid_problems, patchify

__all__ = ["LWMSpectroConfig", "LWMSpectro", "ResCNNHead", "supcon_loss", "LORA_TARGETS",
           "FEATURE_RECIPE"]

# The name of the input recipe in a checkpoint's config.json: STFT power in dB, normalised
# by corpus statistics (spectrumfm.spectrogram.spectrogram_image). It differs from
# SpectrumFM's amp-phase-minmax, so neither model's loader accepts the other's weights.
FEATURE_RECIPE = "stft-db-corpus"


class _DictConfig:
    """``to_dict`` / ``from_dict`` for the dataclass configs (a checkpoint's config.json)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Rebuild from ``to_dict()`` output; unknown keys raise ``ValueError`` naming them
        (a config from other code must not be half-applied), missing keys take defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class LWMSpectroConfig(_DictConfig):
    """Input features, architecture and pretraining objective of an LWM-Spectro encoder.

    Defaults are the paper's model (Table I): 128 x 128 images in 4 x 4 patches (1024 tokens),
    12 pre-norm blocks of d = 128 with 8 heads, 70 % of patches masked, contrastive
    temperature 0.2 and loss weights 1.0 / 0.3. That encoder has 2,512,768 parameters and
    2,531,472 with the decoder and projection (the paper prints no count). The feature fields
    are those of :mod:`spectrumfm.spectrogram` and travel with the weights, so a checkpoint
    rebuilds exactly the input it was trained on.
    """

    n_frames: int = 128        # T, STFT frames per image (image rows)
    n_fft: int = 128           # K, frequency bins per frame (image columns)
    win_length: int = 128      # N_w, analysis window in samples
    hop: int = 64              # R, samples between frames: 8256 samples per 128-frame image
    window: str = "hann"       # analysis window, a key of spectrogram.WINDOWS
    spec_mean: float = 0.0     # dB; corpus mean from spectrogram.corpus_stats, set before
    spec_std: float = 1.0      # dB; training (0 / 1 leaves the dB values as they are)
    patch_size: int = 4        # P: non-overlapping P x P patches (Table I)
    d_model: int = 128         # d
    ff_dim: int = 512          # feed-forward hidden width, 4 d as in ViT
    n_heads: int = 8           # H; head width d / H = 16
    n_layers: int = 12         # L Transformer blocks
    dropout: float = 0.0       # the paper gives none; MAE pretrains without
    pos_init_std: float = 0.02  # learned positions start small, next to the patch embedding
    mask_ratio: float = 0.7    # share of patches hidden per image (Table I)
    proj_dim: int = 128        # d_p of the contrastive projection (eq. 18)
    temperature: float = 0.2   # tau of the contrastive loss (eq. 19, Table I)
    w_recon: float = 1.0       # lambda_recon (eq. 22, Table I)
    w_cont: float = 0.3        # lambda_cont (eq. 22, Table I)

    def __post_init__(self):
        problems = grid_problems(self.n_frames, self.n_fft, self.patch_size, self.d_model,
                                 self.n_heads)
        if self.window not in WINDOWS:
            problems.append(f"window {self.window!r} is not one of {sorted(WINDOWS)}")
        if self.n_fft < self.win_length:
            problems.append(f"n_fft {self.n_fft} is below win_length {self.win_length}")
        if not (math.isfinite(self.spec_std) and self.spec_std > 0
                and math.isfinite(self.spec_mean)):
            problems.append(f"spec_mean {self.spec_mean} / spec_std {self.spec_std} must be "
                            "finite with spec_std > 0")
        if not 0.0 < self.mask_ratio < 1.0:
            problems.append(f"mask_ratio {self.mask_ratio} must lie in (0, 1)")
        elif self.patch_size >= 1 and not 1 <= self.n_masked <= self.n_tokens - 1:
            problems.append(f"mask_ratio {self.mask_ratio} hides {self.n_masked} of "
                            f"{self.n_tokens} patches; at least one must be hidden and one seen")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout {self.dropout} must lie in [0, 1)")
        if self.temperature <= 0 or self.pos_init_std < 0:
            problems.append("temperature must be positive and pos_init_std not negative")
        if min(self.w_recon, self.w_cont) < 0:
            problems.append("loss weights must not be negative")
        if min(self.n_frames, self.win_length, self.hop, self.ff_dim, self.n_heads,
               self.n_layers, self.proj_dim) < 1:
            problems.append("n_frames, win_length, hop, ff_dim, n_heads, n_layers and proj_dim "
                            "must be positive")
        if problems:
            raise ValueError("bad LWM-Spectro config: " + "; ".join(problems))

    @property
    def input_len(self) -> int:
        """IQ samples per image, ``samples_for_frames(n_frames, win_length, hop)``: 8256 for
        the defaults."""
        return samples_for_frames(self.n_frames, self.win_length, self.hop)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches along time and frequency, (T / P, K / P)."""
        return self.n_frames // self.patch_size, self.n_fft // self.patch_size

    @property
    def n_tokens(self) -> int:
        """N = (T / P)(K / P); 1024 for the paper's 128 x 128 images."""
        return self.grid[0] * self.grid[1]

    @property
    def n_masked(self) -> int:
        """Patches hidden per image, round(mask_ratio * N): 717 of 1024 in the paper."""
        return round(self.mask_ratio * self.n_tokens)


def supcon_loss(embeddings: Tensor, labels: Tensor, temperature: float = 0.2) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out; paper eq. 19), mean over anchors.

    For each anchor i with at least one other example of its class, the loss is
    ``-mean_{p in P(i)} log(exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau))`` with the
    ``z`` L2-normalised; anchors alone in their class have no positive and are left out.

    Args:
        embeddings: (B, D) projections; normalised here (already normalised ones are fine).
        labels: (B,) integer class of each example.
        temperature: tau > 0.

    Returns:
        float32 scalar; 0 (still attached to the graph) when no anchor has a positive.
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (B, D), got {tuple(embeddings.shape)}")
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(f"labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = F.normalize(embeddings.float(), dim=1)
    B = z.shape[0]
    self_mask = torch.eye(B, dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))   # (B, B), a != i
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)            # (B, B)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask          # (B, B): P(i)
    n_pos = positives.sum(1)                                               # (B,)
    has_pos = n_pos > 0
    if not has_pos.any():
        return z.sum() * 0.0
    # Selected with where, not multiplied: the diagonal's -inf must not meet a zero.
    pos_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


class LWMSpectro(nn.Module):
    """The LWM-Spectro encoder with its masked-modelling decoder and contrastive projection."""

    feature_recipe = FEATURE_RECIPE

    @staticmethod
    def checkpoint_features(config: dict) -> dict:
        """The ``features`` entry of a checkpoint's config.json (see
        :func:`spectrumfm.train.save_pretrained`): the recipe, the IQ samples a caller must
        feed per image and the image it becomes; the STFT fields and corpus statistics
        themselves are in ``model_config``."""
        c = LWMSpectroConfig.from_dict(config)
        return {"recipe": FEATURE_RECIPE, "window_len": c.input_len,
                "image": [c.n_frames, c.n_fft]}

    def __init__(self, config: LWMSpectroConfig | None = None):
        super().__init__()
        self.config = cfg = config or LWMSpectroConfig()
        self.encoder = PatchEncoder(cfg.n_frames, cfg.n_fft, cfg.patch_size, cfg.d_model,
                                    cfg.n_heads, cfg.ff_dim, cfg.n_layers, cfg.dropout,
                                    cfg.pos_init_std)
        # The [MASK] embedding of eq. 15, shared by all hidden patches; positions are added
        # after it, so the encoder knows where each hidden patch was.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder = nn.Linear(cfg.d_model, cfg.patch_size ** 2)     # g_phi, eq. 16
        self.proj = nn.Linear(cfg.d_model, cfg.proj_dim)               # W_p, b_p, eq. 18

    def features(self, iq: Tensor) -> Tensor:
        """IQ -> normalised spectrogram images with this model's feature parameters.

        Args:
            iq: complex ``(..., S)`` or real ``(..., S, 2)``; ``S =
                samples_for_frames(config.n_frames, config.win_length, config.hop)`` (8256
                for the defaults) gives exactly one image per leading index.

        Returns:
            ``(..., T, K)`` float images.
        """
        c = self.config
        return spectrogram_image(iq, c.spec_mean, c.spec_std, c.n_fft, c.win_length, c.hop,
                                 c.window)

    def patchify(self, images: Tensor) -> Tensor:
        """(B, T, K) images -> (B, N, P^2) patch pixels, the reconstruction targets."""
        self.encoder.check(images)
        return patchify(images, self.config.patch_size)

    def mask_patches(self, images: Tensor, ratio: float | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        """Choose the patches to hide: exactly ``round(ratio * N)`` per image, uniformly.

        Args:
            images: (B, T, K); only its batch size and device are used.
            ratio: share of patches to hide, default ``config.mask_ratio`` (0.7).
            generator: source of randomness on ``images``' device, for reproducible masks.

        Returns:
            (B, N) bool, True where hidden.
        """
        ratio = self.config.mask_ratio if ratio is None else ratio
        N = self.config.n_tokens
        n_masked = round(ratio * N)
        if not 0.0 < ratio < 1.0 or not 1 <= n_masked <= N - 1:
            raise ValueError(f"ratio {ratio} must hide at least one and at most {N - 1} of "
                             f"{N} patches")
        noise = torch.rand(images.shape[0], N, generator=generator, device=images.device)
        ranks = noise.argsort(dim=1).argsort(dim=1)                    # (B, N): a permutation
        return ranks < n_masked

    def forward_encoder(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        """Encode images: (B, T, K) -> tokens (B, N, d).

        Args:
            images: normalised spectrograms, ``(B, config.n_frames, config.n_fft)``.
            mask: optional (B, N) bool from :meth:`mask_patches`; hidden patches enter as the
                learned mask token (eq. 15), so their pixels cannot reach the output.
        """
        x = self.encoder.embed(images)                                 # (B, N, d)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        return self.encoder.encode(x)

    forward = forward_encoder

    def embed(self, images: Tensor) -> Tensor:
        """Mean of the unmasked encoder's tokens: (B, T, K) -> (B, d), for probes and plots."""
        return self.forward_encoder(images).mean(dim=1)

    @staticmethod
    def masked_loss(target: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error per pixel over the masked patches (eq. 17 / P^2).

        Args:
            target: (B, N, P^2) true patch pixels (:meth:`patchify`).
            pred: (B, N, P^2) decoder output.
            mask: (B, N) bool, True where the encoder did not see the patch.

        Returns:
            float32 scalar. Unmasked patches are selected out before squaring, so whatever
            they hold (even inf) reaches neither the loss nor the gradient.
        """
        diff = torch.where(mask[..., None], pred.float() - target.float(), 0.0)  # (B, N, P^2)
        return diff.square().sum() / (mask.sum().clamp_min(1) * target.shape[-1])

    def forward_pretrain(self, images: Tensor, labels: Tensor | None = None,
                         generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Masked spectrogram modelling, plus supervised contrastive learning given labels.

        One encoder pass over the masked images serves both objectives: the contrastive
        projection reads the mean of the same tokens the decoder reads, so stage 2 (eq. 22)
        costs no more than stage 1 (eq. 21) and its embedding must hold up with 70 % hidden.

        Args:
            images: (B, T, K) normalised spectrograms.
            labels: (B,) integer classes for the contrastive term, or None for stage 1.
            generator: for the mask, on ``images``' device.

        Returns:
            ``{"loss", "loss_recon"}`` float32 scalars, plus ``"loss_cont"`` when ``labels``
            is given, where ``loss = w_recon * loss_recon (+ w_cont * loss_cont)``.
        """
        mask = self.mask_patches(images, generator=generator)
        tokens = self.forward_encoder(images, mask)                    # (B, N, d)
        loss_recon = self.masked_loss(self.patchify(images), self.decoder(tokens), mask)
        out = {"loss": self.config.w_recon * loss_recon, "loss_recon": loss_recon}
        if labels is not None:
            z = self.proj(tokens.mean(dim=1))                          # (B, d_p), eq. 18
            out["loss_cont"] = supcon_loss(z, labels, self.config.temperature)
            out["loss"] = out["loss"] + self.config.w_cont * out["loss_cont"]
        return out


class _ResBlock1d(nn.Module):
    """conv -> norm -> GELU -> conv -> norm, plus the input, then GELU; (B, C, L) -> same."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        self.conv_a = nn.Conv1d(channels, channels, kernel_size, padding=pad)
        self.norm_a = nn.GroupNorm(1, channels)
        self.conv_b = nn.Conv1d(channels, channels, kernel_size, padding=pad)
        self.norm_b = nn.GroupNorm(1, channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm_b(self.conv_b(F.gelu(self.norm_a(self.conv_a(x)))))
        return F.gelu(x + y)


class ResCNNHead(nn.Module):
    """Downstream head of §III-F: mean over tokens, residual 1D CNN, global average pooling,
    linear; tokens (B, N, d) -> logits (B, n_classes).

    The paper pools first (``z = mean_i z_i``, a d-vector) and then convolves, so the CNN
    runs along the d channels of the pooled vector, read as a one-channel sequence of length
    d. That is the text taken literally; the head stays tiny (about 13 k parameters at the
    defaults) as "lightweight" promises. Its norms are per-example GroupNorms, so a window's
    logits never depend on the rest of its batch, not even with the 2 examples per class of
    the few-shot protocol.

    Args:
        d_model: width d of the encoder tokens.
        n_classes: number of output logits.
        channels: convolution channels C.
        n_blocks: residual blocks after the stem convolution.
        kernel_size: odd convolution width, so the length d is kept.
        dropout: on the pooled (B, C) vector before the classifier.
    """

    def __init__(self, d_model: int, n_classes: int, channels: int = 32, n_blocks: int = 2,
                 kernel_size: int = 3, dropout: float = 0.1):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {kernel_size} must be odd and positive")
        if min(d_model, n_classes, channels) < 1 or n_blocks < 0:
            raise ValueError("d_model, n_classes and channels must be positive, n_blocks not "
                             "negative")
        self.d_model = d_model
        self.stem = nn.Conv1d(1, channels, kernel_size, padding=kernel_size // 2)
        self.res_blocks = nn.Sequential(*(_ResBlock1d(channels, kernel_size)
                                          for _ in range(n_blocks)))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, N, d) -> logits (B, n_classes)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.d_model:
            raise ValueError(f"expected tokens (B, N, {self.d_model}), got {tuple(tokens.shape)}")
        z = tokens.mean(dim=1)[:, None, :]                             # (B, 1, d)
        h = self.res_blocks(F.gelu(self.stem(z)))                      # (B, C, d)
        return self.classifier(self.dropout(h.mean(dim=-1)))           # GAP: (B, C)


def _build(size: dict, overrides: dict) -> LWMSpectro:
    return LWMSpectro(LWMSpectroConfig.from_dict({**size, **overrides}))


@register_model("lwm-spectro-tiny")
def lwm_spectro_tiny(**overrides) -> LWMSpectro:
    """d = 64, ff = 256, H = 4, L = 4 on the paper's 128 x 128 images in 8 x 8 patches.

    The same images as the paper model (one feature path, one set of data shards for both
    sizes), but 256 tokens instead of 1024: attention is 16 times cheaper and a pretraining
    step on 8 images takes about 0.15 s on one CPU core against 1.2 s with ``patch_size=4``
    (and 8 s for the paper model). 220,608 encoder parameters, 228,992 in all.
    """
    return _build(dict(d_model=64, ff_dim=256, n_heads=4, n_layers=4, patch_size=8,
                       proj_dim=64), overrides)


@register_model("lwm-spectro-paper")
def lwm_spectro_paper(**overrides) -> LWMSpectro:
    """The paper's model (Table I): 128 x 128 images, 4 x 4 patches, d = 128, H = 8, L = 12."""
    return _build(dict(d_model=128, ff_dim=512, n_heads=8, n_layers=12, patch_size=4),
                  overrides)
