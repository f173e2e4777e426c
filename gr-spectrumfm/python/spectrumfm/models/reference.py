"""A plain eager PyTorch SpectrumFM encoder: the yardstick for `spectrumfm benchmark --baseline`.

The issue asks that the library encoder be no slower on a CPU than "a plain eager PyTorch
implementation of the paper's encoder with hand-written attention". This is that
implementation: every step written out as the paper's equations read, attention as
``softmax(Q K^T / sqrt(d_h)) V`` with explicit matmuls (eq. 6) instead of
``scaled_dot_product_attention``, and nothing fused or compiled.

It is the same function as :meth:`spectrumfm.models.SpectrumFM.forward_encoder`: same
sub-modules under the same parameter names (input projection, feed-forward, attention,
conv module with its GLU and LayerNorm, post-norm residuals), so an encoder's weights load
into it unchanged and the test compares outputs, not only parameter counts. It has no
pretraining decoder or next-slot head: the benchmark times the encoder alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spectrumfm import SpectrumFMConfig

__all__ = ["ReferenceEncoder"]


class _FeedForward(nn.Module):
    def __init__(self, d: int, ff: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d, ff)
        self.fc2 = nn.Linear(ff, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:                      # (B, N, d) -> (B, N, d)
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class _Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, N, d = x.shape
        dh = d // self.n_heads
        q = self.q_proj(x).view(B, N, self.n_heads, dh).transpose(1, 2)   # (B, H, N, dh)
        k = self.k_proj(x).view(B, N, self.n_heads, dh).transpose(1, 2)   # (B, H, N, dh)
        v = self.v_proj(x).view(B, N, self.n_heads, dh).transpose(1, 2)   # (B, H, N, dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(dh)                  # (B, H, N, N)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        y = (weights @ v).transpose(1, 2).reshape(B, N, d)                # heads concatenated
        return self.dropout(self.out_proj(y))


class _ConvModule(nn.Module):
    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        self.pointwise1 = nn.Conv1d(d, 2 * d, kernel_size=1)
        self.depthwise = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.norm = nn.LayerNorm(d)
        self.pointwise2 = nn.Conv1d(d, d, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.glu(self.pointwise1(x.transpose(1, 2)), dim=1)   # (B, d, N)
        x = self.depthwise(x)                                  # (B, d, N)
        x = F.silu(self.norm(x.transpose(1, 2)))               # (B, N, d)
        return self.dropout(self.pointwise2(x.transpose(1, 2)).transpose(1, 2))


class _Block(nn.Module):
    def __init__(self, cfg: SpectrumFMConfig):
        super().__init__()
        d = cfg.d_model
        self.ff1 = _FeedForward(d, cfg.ff_dim, cfg.dropout)
        self.norm_ff1 = nn.LayerNorm(d)
        self.attn = _Attention(d, cfg.n_heads, cfg.dropout)
        self.norm_attn = nn.LayerNorm(d)
        self.conv = _ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.norm_conv = nn.LayerNorm(d)
        self.ff2 = _FeedForward(d, cfg.ff_dim, cfg.dropout)
        self.norm_ff2 = nn.LayerNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm_ff1(x + self.ff1(x))          # eq. 4
        x = self.norm_attn(x + self.attn(x))        # eq. 5-7
        x = self.norm_conv(x + self.conv(x))        # eq. 8-10
        return self.norm_ff2(x + self.ff2(x))       # eq. 11


class ReferenceEncoder(nn.Module):
    """Features (B, N, in_features) -> tokens (B, N, d), eager and unfused.

    Args:
        config: the architecture, e.g. ``create_model("spectrumfm-paper").config``.
    """

    def __init__(self, config: SpectrumFMConfig | None = None):
        super().__init__()
        self.config = cfg = config or SpectrumFMConfig()
        d = cfg.d_model
        self.input_proj = nn.Conv1d(cfg.in_features, d, kernel_size=1)          # eq. 2
        p = torch.arange(cfg.window_len, dtype=torch.float32)[:, None]
        inv_freq = torch.pow(10000.0, -torch.arange(0, d, 2, dtype=torch.float32) / d)
        pe = torch.zeros(cfg.window_len, d)
        pe[:, 0::2] = torch.sin(p * inv_freq)                                     # eq. 3a
        pe[:, 1::2] = torch.cos(p * inv_freq)                                     # eq. 3b
        self.register_buffer("pos", pe, persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))

    def forward(self, feats: Tensor) -> Tensor:
        x = self.input_proj(feats.transpose(1, 2)).transpose(1, 2)              # (B, N, d)
        x = self.dropout(x + self.pos[: x.shape[1]])
        for block in self.blocks:
            x = block(x)
        return x
