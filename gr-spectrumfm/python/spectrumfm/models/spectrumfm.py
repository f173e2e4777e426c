"""SpectrumFM: the spectrum encoder (paper §II-A) and its two pretraining objectives (§II-B).

Reads bottom-up: the config, then modules from small to large (feed-forward, self-attention,
convolution module, encoder block, positional encoding) and the model with its objectives as
named methods: ``forward_encoder``, ``random_masking``, ``forward_loss``, ``forward_pretrain``
and ``reconstruction_error``. Input is the ``(B, N, 2)`` output of
:func:`spectrumfm.features.iq_features`; B windows, N samples, d model channels below.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import register_model

# Module-name suffixes of every nn.Linear and pointwise nn.Conv1d inside the encoder blocks,
# as peft's ``LoraConfig(target_modules=LORA_TARGETS)`` matches them (exact name or ending in
# "." + suffix). Nothing outside the blocks shares these names: the input projection
# (``input_proj``, 2 input channels, too narrow for a rank-8 update), the depthwise conv, the
# pretraining decoder and next-slot head and the task heads all stay unadapted. At rank 8 on
# the paper model all eight add 819,200 parameters (5.2 % of its encoder); the attention
# projections alone add 262,144 (1.7 %), nearer the paper's "2 % of parameters".
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "pointwise1", "pointwise2"]


@dataclass
class SpectrumFMConfig:
    """Architecture and pretraining objective of a SpectrumFM model.

    Defaults are the paper's model (§III-A): d = 256, feed-forward 512, 4 heads, 16 blocks,
    dropout 0.1, N = 128, mask ratio 15 %. That model has 15,840,000 parameters in its encoder
    (input projection and blocks) and 16,301,572 with the pretraining decoder and next-slot
    head: the paper's "about 16 M". The paper prints no exact count. The figure hinges on the
    convolution module's first pointwise conv, which doubles the channels for a GLU as in the
    authors' code and the Conformer; without the GLU the encoder would have 14.8 M.
    """

    window_len: int = 128      # N, samples per window: the paper's symbols per input (§III-A)
    in_features: int = 2       # normalised amplitude and phase per sample (eq. 1)
    d_model: int = 256         # d, the paper's latent dimension
    ff_dim: int = 512          # hidden width of both feed-forward modules (eq. 4, 11)
    n_heads: int = 4           # H; head width d / H = 64 suits fused attention kernels
    n_layers: int = 16         # L encoder blocks
    dropout: float = 0.1       # the paper's dropout ratio, used after every sub-module
    conv_kernel: int = 3       # depthwise conv width (eq. 9): odd, so length is preserved
    mask_ratio: float = 0.15   # r, chance that a sample is masked for reconstruction (eq. 12)
    w_mask: float = 1.0        # weight of the masked-reconstruction loss (eq. 13)
    w_next: float = 1.0        # weight of the next-slot loss (eq. 14); the authors add both

    def __post_init__(self):
        problems = []
        if self.d_model % self.n_heads:
            problems.append(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.d_model % 2:
            problems.append(f"d_model {self.d_model} must be even (sin/cos pairs, eq. 3)")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            problems.append(f"conv_kernel {self.conv_kernel} must be odd and positive")
        if self.window_len < 2:
            problems.append(f"window_len {self.window_len} leaves nothing to predict from")
        if not 0.0 < self.mask_ratio < 1.0:
            problems.append(f"mask_ratio {self.mask_ratio} must lie in (0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout {self.dropout} must lie in [0, 1)")
        if min(self.w_mask, self.w_next) < 0:
            problems.append("loss weights must not be negative")
        if min(self.in_features, self.ff_dim, self.n_layers) < 1:
            problems.append("in_features, ff_dim and n_layers must be positive")
        if problems:
            raise ValueError("bad SpectrumFM config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpectrumFMConfig":
        """Rebuild from ``to_dict()`` output (e.g. a checkpoint's config.json).

        Unknown keys raise ``ValueError`` naming them: a config from other code must not be
        half-applied. Missing keys take the defaults above.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SpectrumFM config keys {unknown}; known: {sorted(known)}")
        return cls(**d)


class FeedForward(nn.Module):
    """Two linear layers with GELU between (eq. 4 and eq. 11), (B, N, d) -> (B, N, d)."""

    def __init__(self, cfg: SpectrumFMConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.ff_dim)
        self.fc2 = nn.Linear(cfg.ff_dim, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention (eq. 5–7), (B, N, d) -> (B, N, d).

    ``scaled_dot_product_attention`` picks a fused kernel where one exists (flash or
    memory-efficient attention on CUDA, a fused CPU kernel otherwise) and never builds the
    (B, H, N, N) score tensor in Python.
    """

    def __init__(self, cfg: SpectrumFMConfig | None = None, *, d_model: int | None = None,
                 n_heads: int | None = None, dropout: float | None = None):
        super().__init__()
        # From a SpectrumFM config, or from the three numbers (LWM-Spectro's patch encoder
        # uses this same module).
        d_model = cfg.d_model if cfg is not None else d_model
        self.n_heads = cfg.n_heads if cfg is not None else n_heads
        self.attn_dropout = cfg.dropout if cfg is not None else dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(self.attn_dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, N, d = x.shape
        heads = (B, N, self.n_heads, d // self.n_heads)
        q = self.q_proj(x).view(heads).transpose(1, 2)   # (B, H, N, d/H)
        k = self.k_proj(x).view(heads).transpose(1, 2)   # (B, H, N, d/H)
        v = self.v_proj(x).view(heads).transpose(1, 2)   # (B, H, N, d/H)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, N, d)           # (B, N, d): heads concatenated
        return self.dropout(self.out_proj(y))


class ConvModule(nn.Module):
    """Pointwise conv -> depthwise conv (k = 3) -> pointwise conv (eq. 8–10), (B, N, d) -> same.

    The paper writes only the three convolutions; stacked without non-linearity they would
    collapse into one linear map. As in the Conformer and the authors' code, the first
    pointwise conv doubles the channels for a GLU, and the depthwise conv is followed by a
    normalisation and SiLU. The normalisation is a LayerNorm over channels rather than the
    Conformer's BatchNorm: the output for one window then never depends on the rest of the
    batch (live inference of a single window equals batched inference), a frozen backbone has
    no running statistics that drift during LoRA fine-tuning, and DDP needs no SyncBatchNorm.
    """

    def __init__(self, cfg: SpectrumFMConfig):
        super().__init__()
        d = cfg.d_model
        self.pointwise1 = nn.Conv1d(d, 2 * d, kernel_size=1)
        self.depthwise = nn.Conv1d(d, d, cfg.conv_kernel, padding=cfg.conv_kernel // 2, groups=d)
        self.norm = nn.LayerNorm(d)
        self.pointwise2 = nn.Conv1d(d, d, kernel_size=1)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2)                           # (B, d, N): Conv1d is channels-first
        x = F.glu(self.pointwise1(x), dim=1)            # (B, 2d, N) -> (B, d, N)
        x = self.depthwise(x)                           # (B, d, N)
        x = F.silu(self.norm(x.transpose(1, 2)))        # (B, N, d): LayerNorm over channels
        x = self.pointwise2(x.transpose(1, 2))          # (B, d, N)
        return self.dropout(x.transpose(1, 2))          # (B, N, d)


class ConformerBlock(nn.Module):
    """One encoder block: feed-forward -> MHSA -> conv module -> feed-forward (eq. 4–11).

    Each sub-module is wrapped as ``norm(x + f(x))``: the paper's "residual connection
    followed by normalisation" (RN), i.e. post-norm, with full (not the Conformer's half-step)
    feed-forward residuals, as eq. 4 and 11 write them.
    """

    def __init__(self, cfg: SpectrumFMConfig):
        super().__init__()
        self.ff1 = FeedForward(cfg)
        self.norm_ff1 = nn.LayerNorm(cfg.d_model)
        self.attn = MultiHeadSelfAttention(cfg)
        self.norm_attn = nn.LayerNorm(cfg.d_model)
        self.conv = ConvModule(cfg)
        self.norm_conv = nn.LayerNorm(cfg.d_model)
        self.ff2 = FeedForward(cfg)
        self.norm_ff2 = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm_ff1(x + self.ff1(x))
        x = self.norm_attn(x + self.attn(x))
        x = self.norm_conv(x + self.conv(x))
        return self.norm_ff2(x + self.ff2(x))


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """Positional encoding of eq. 3 as float32 (n, d): sin on even channels, cos on odd."""
    p = torch.arange(n, dtype=torch.float32)[:, None]                     # (n, 1)
    inv_freq = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))  # 10000^(-2i/d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(p * inv_freq)
    pe[:, 1::2] = torch.cos(p * inv_freq)
    return pe


class SpectrumFM(nn.Module):
    """The spectrum encoder with its masked-reconstruction decoder and next-slot head."""

    def __init__(self, config: SpectrumFMConfig | None = None):
        super().__init__()
        self.config = cfg = config or SpectrumFMConfig()
        d = cfg.d_model
        self.input_proj = nn.Conv1d(cfg.in_features, d, kernel_size=1)   # eq. 2
        # Derived, not learned: kept out of the state_dict so checkpoints hold weights only.
        self.register_buffer("pos", sinusoidal_positions(cfg.window_len, d), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_layers))
        # Two linear layers back to the input features (§II-B 1).
        self.decoder = nn.Sequential(OrderedDict(
            hidden=nn.Linear(d, d), act=nn.GELU(), out=nn.Linear(d, cfg.in_features)))
        # Next-slot head (§II-B 2): a GRU reads the tokens of the first N - 1 samples in order
        # and its final hidden state, which has seen all of them with the most recent last,
        # is mapped to the features of sample N. This is the authors' pooling; mean pooling
        # would discard the order that extrapolation depends on.
        self.next_gru = nn.GRU(d, d, batch_first=True)
        self.next_out = nn.Linear(d, cfg.in_features)

    def forward_encoder(self, feats: Tensor) -> Tensor:
        """Encode feature windows: (B, N, in_features) -> tokens (B, N, d).

        N may differ from ``config.window_len`` (e.g. a whole 1024-sample frame); positions
        beyond the cached table are computed on the fly.
        """
        if feats.dim() != 3 or feats.shape[-1] != self.config.in_features:
            raise ValueError(f"expected features (B, N, {self.config.in_features}), "
                             f"got {tuple(feats.shape)}")
        N = feats.shape[1]
        x = self.input_proj(feats.transpose(1, 2)).transpose(1, 2)      # (B, N, d)
        pos = self.pos if N <= self.pos.shape[0] else sinusoidal_positions(N, x.shape[-1])
        x = self.dropout(x + pos[:N].to(x.device, x.dtype))
        for block in self.blocks:
            x = block(x)
        return x

    forward = forward_encoder

    def random_masking(self, feats: Tensor, ratio: float | None = None,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Hide random samples by zeroing their features (eq. 12).

        Each sample is masked independently with probability ``ratio`` (default
        ``config.mask_ratio``); a window that drew none gets its lowest draw masked, so every
        window has a reconstruction target and a per-window error (no 0/0).

        Args:
            feats: (B, N, F) features.
            ratio: masking probability in (0, 1).
            generator: source of randomness, on ``feats``' device, for reproducible masks.

        Returns:
            ``(masked_feats (B, N, F), mask (B, N) bool)``, mask True where hidden.
        """
        B, N, _ = feats.shape
        ratio = self.config.mask_ratio if ratio is None else ratio
        u = torch.rand(B, N, generator=generator, device=feats.device)
        mask = u < ratio                                                  # (B, N)
        lowest = F.one_hot(u.argmin(dim=1), N).bool()                     # (B, N)
        mask |= lowest & ~mask.any(dim=1, keepdim=True)
        return feats.masked_fill(mask[..., None], 0.0), mask

    @staticmethod
    def forward_loss(target: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Masked reconstruction loss (eq. 13): squared error norm averaged over masked samples.

        Args:
            target: (B, N, F) true features.
            pred: (B, N, F) reconstruction.
            mask: (B, N) bool, True where the encoder did not see the sample.

        Returns:
            float32 scalar. Unmasked samples are selected out, not multiplied by zero, so
            whatever they hold (even inf) cannot reach the loss or its gradient.
        """
        err = (pred.float() - target.float()).pow(2).sum(-1)              # (B, N)
        err = torch.where(mask, err, torch.zeros_like(err))
        return err.sum() / mask.sum().clamp_min(1)

    def forward_pretrain(self, feats: Tensor,
                         generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Both pretraining objectives on one encoder pass.

        The last sample is always hidden: the encoder attends both ways, so a visible sample N
        would let the next-slot head copy it. It is then also a reconstruction target, which
        makes the masked loss cover exactly the samples the encoder did not see.

        Args:
            feats: (B, N, F) features from :func:`spectrumfm.features.iq_features`.
            generator: for the mask, on ``feats``' device.

        Returns:
            ``{"loss", "loss_mask", "loss_next"}`` float32 scalars, where
            ``loss = w_mask * loss_mask + w_next * loss_next``.
        """
        masked, mask = self.random_masking(feats, generator=generator)
        masked[:, -1] = 0.0
        mask[:, -1] = True
        tokens = self.forward_encoder(masked)                             # (B, N, d)
        loss_mask = self.forward_loss(feats, self.decoder(tokens), mask)
        _, h_last = self.next_gru(tokens[:, :-1])                         # (1, B, d)
        next_pred = self.next_out(h_last[0])                              # (B, F)
        loss_next = (next_pred.float() - feats[:, -1].float()).pow(2).sum(-1).mean()  # eq. 14
        loss = self.config.w_mask * loss_mask + self.config.w_next * loss_next
        return {"loss": loss, "loss_mask": loss_mask, "loss_next": loss_next}

    def reconstruction_error(self, feats: Tensor,
                             generator: torch.Generator | None = None) -> Tensor:
        """Per-window masked reconstruction error, the raw anomaly score.

        The decoder was only ever trained on hidden samples, so the error is read there too:
        a random mask at ``config.mask_ratio``, then eq. 13 per window. Call in ``eval()`` mode
        and pass a fixed generator for a deterministic score; average several draws to lower
        its variance.

        Args:
            feats: (B, N, F) features.
            generator: for the mask, on ``feats``' device.

        Returns:
            float32 (B,): mean squared error norm over each window's masked samples, in
            squared normalised-feature units (0 is a perfect reconstruction).
        """
        masked, mask = self.random_masking(feats, generator=generator)
        pred = self.decoder(self.forward_encoder(masked))                 # (B, N, F)
        err = (pred.float() - feats.float()).pow(2).sum(-1)               # (B, N)
        return torch.where(mask, err, torch.zeros_like(err)).sum(1) / mask.sum(1)


def _build(size: dict, overrides: dict) -> SpectrumFM:
    return SpectrumFM(SpectrumFMConfig.from_dict({**size, **overrides}))


@register_model("spectrumfm-tiny")
def spectrumfm_tiny(**overrides) -> SpectrumFM:
    """d = 64, ff = 128, H = 4, L = 2: pretrains on a laptop CPU in minutes."""
    return _build(dict(d_model=64, ff_dim=128, n_heads=4, n_layers=2), overrides)


@register_model("spectrumfm-small")
def spectrumfm_small(**overrides) -> SpectrumFM:
    """d = 128, ff = 256, H = 4, L = 4: a CPU-overnight or one-GPU-minutes model."""
    return _build(dict(d_model=128, ff_dim=256, n_heads=4, n_layers=4), overrides)


@register_model("spectrumfm-paper")
def spectrumfm_paper(**overrides) -> SpectrumFM:
    """The paper's model (§III-A): d = 256, ff = 512, H = 4, L = 16, dropout 0.1."""
    return _build(dict(d_model=256, ff_dim=512, n_heads=4, n_layers=16, dropout=0.1), overrides)
