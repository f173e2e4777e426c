"""A ViT-style Transformer over spectrogram patches, shared by LWM-Spectro and its MoE router.

Patches (paper eq. 11), learned positions (eq. 12), pre-norm Transformer blocks (eq. 13–14)
through ``scaled_dot_product_attention`` and a final LayerNorm. Images are ``(B, T, K)``,
time down the rows; P is the patch side, N = (T / P)(K / P) the tokens, d the width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spectrumfm import MultiHeadSelfAttention

# Module-name suffixes of the linears inside the Transformer blocks, for peft's
# ``LoraConfig(target_modules=...)`` as in :data:`spectrumfm.models.spectrumfm.LORA_TARGETS`.
# The patch embedding, decoder, projection and heads use other names and stay unadapted.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def grid_problems(n_frames: int, n_fft: int, patch_size: int, d_model: int,
                  n_heads: int) -> list[str]:
    """What is wrong with an encoder's image, patch and width settings (empty when nothing):
    the config checks of LWM-Spectro and of its router."""
    problems = []
    P = patch_size
    if P < 1 or n_frames % P or n_fft % P:
        problems.append(f"image {n_frames} x {n_fft} does not split into {P} x {P} patches")
    if d_model % n_heads:
        problems.append(f"d_model {d_model} is not divisible by n_heads {n_heads}")
    return problems


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + MSA(LN(x))`` then ``x + FFN(LN(x))``, FFN with GELU (eq. 14)."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        # SpectrumFM's attention module (SDPA; q_proj ... out_proj, as LORA_TARGETS names).
        self.attn = MultiHeadSelfAttention(d_model=d_model, n_heads=n_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ff_dim)
        self.fc2 = nn.Linear(ff_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm2(x))))))


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, T, K) -> (B, N, P^2), tokens in time-major order (token t * K/P + f), each patch
    flattened row by row."""
    B, T, K = images.shape
    P = patch_size
    x = images.reshape(B, T // P, P, K // P, P)          # (B, T/P, P, K/P, P)
    return x.permute(0, 1, 3, 2, 4).reshape(B, (T // P) * (K // P), P * P)


def unpatchify(patches: Tensor, grid: tuple[int, int], patch_size: int) -> Tensor:
    """(B, N, P^2) -> (B, T, K), the inverse of :func:`patchify` (to look at reconstructions)."""
    B = patches.shape[0]
    (gt, gf), P = grid, patch_size
    x = patches.reshape(B, gt, gf, P, P).permute(0, 1, 3, 2, 4)   # (B, T/P, P, K/P, P)
    return x.reshape(B, gt * P, gf * P)


class PatchEncoder(nn.Module):
    """Patch embedding (eq. 11), learned positions (eq. 12) and pre-norm Transformer blocks
    with a final LayerNorm; shared by the LWM-Spectro experts and the MoE router."""

    def __init__(self, n_frames: int, n_fft: int, patch_size: int, d_model: int,
                 n_heads: int, ff_dim: int, n_layers: int, dropout: float = 0.0,
                 pos_init_std: float = 0.02):
        super().__init__()
        self.image_shape = (n_frames, n_fft)
        self.patch_size = patch_size
        n_tokens = (n_frames // patch_size) * (n_fft // patch_size)
        self.patch_embed = nn.Linear(patch_size * patch_size, d_model)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, d_model))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, ff_dim, dropout)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        for m in self.modules():
            if isinstance(m, nn.Linear):        # MAE's initialisation of every linear
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=pos_init_std, a=-2 * pos_init_std,
                              b=2 * pos_init_std)

    def check(self, images: Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is (B, T, K) at this encoder's size: the
        learned positions fix the token grid."""
        if images.dim() != 3 or tuple(images.shape[1:]) != self.image_shape:
            T, K = self.image_shape
            raise ValueError(f"expected spectrogram images (B, {T}, {K}), "
                             f"got {tuple(images.shape)}")

    def embed(self, images: Tensor) -> Tensor:
        """(B, T, K) images -> (B, N, d) patch embeddings, before positions."""
        self.check(images)
        return self.patch_embed(patchify(images, self.patch_size))

    def encode(self, x: Tensor) -> Tensor:
        """(B, N, d) embeddings -> (B, N, d) tokens: add positions, blocks, final norm."""
        x = self.dropout(x + self.pos_embed.to(x.dtype))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: Tensor) -> Tensor:
        """(B, T, K) -> (B, N, d)."""
        return self.encode(self.embed(images))
