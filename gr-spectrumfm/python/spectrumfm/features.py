"""Model input features, written once in PyTorch for training and live inference alike.

SpectrumFM (paper §II-A, eq. 1) reads a window of N complex baseband samples as two real
sequences, amplitude ``|x|`` and phase ``angle(x)`` in radians, each min–max normalised to
[0, 1] over the window on its own. Normalising per window makes the features independent of
receiver gain and absolute power, so recordings from different front ends look alike; the
price is that absolute level is gone (the energy detector keeps that information).

Two input layouts are accepted: samples last for complex input, the I/Q pair last for real
input.

* complex ``(..., N)`` (complex64 or complex128), as GNU Radio's ``gr_complex`` stream and
  SigMF ``cf32_le`` recordings give it;
* real ``(..., N, 2)`` with ``[..., 0] = I`` and ``[..., 1] = Q`` (float32, float64, float16 or
  bfloat16), the RadioML 2018.01A layout. RadioML 2016.10a stores ``(k, 2, N)``: swap its
  last two axes first (``x.transpose(-1, -2)``). A ``(..., 2, N)`` layout is deliberately not
  guessed, since ``N == 2`` would make it ambiguous.

Everything runs on the input's device; nothing is copied to the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["iq_features", "level_features", "features_for", "FEATURE_RECIPES",
           "windows_from_iq", "minmax_normalise", "WINDOW_LEN", "N_FEATURES"]

# The paper's window: N = 128 symbols (§III-A), the RadioML frame length.
WINDOW_LEN = 128
# Features per sample: normalised amplitude and normalised phase.
N_FEATURES = 2

# Reduced-precision inputs are computed in float32: atan2 and a min–max over 128 values in
# bfloat16 (8 bits of mantissa) would quantise the normalised phase to steps of about 1/128
# before the model ever sees it. The result is cast back to the input's dtype.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def minmax_normalise(x: Tensor, dim: int = -1) -> Tensor:
    """Scale ``x`` to [0, 1] along ``dim`` by its own minimum and maximum (paper eq. 1).

    A slice whose maximum equals its minimum (a constant window, e.g. an all-zero capture or
    a pure carrier's amplitude) maps to zeros instead of 0/0, so no NaN ever reaches the
    model. Non-finite inputs are not repaired: garbage in stays visible.

    Args:
        x: real tensor of any shape and floating dtype.
        dim: the axis to normalise over (the sample axis).

    Returns:
        tensor of ``x``'s shape and dtype, values in [0, 1].
    """
    lo = x.amin(dim=dim, keepdim=True)
    span = x.amax(dim=dim, keepdim=True) - lo
    flat = span <= 0
    # Dividing by 1 where the span is zero keeps the arithmetic finite; torch.where then
    # replaces those slices by zeros (a constant carries no shape information).
    scaled = (x - lo) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.zeros_like(scaled), scaled)


def _as_iq_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    if x.is_complex():
        return x.real, x.imag
    if not x.is_floating_point():
        raise TypeError(f"IQ input must be complex or floating point, got {x.dtype}")
    if x.dim() < 2 or x.shape[-1] != 2:
        raise ValueError(
            f"real IQ input must have I/Q last, shape (..., N, 2); got {tuple(x.shape)}")
    return x[..., 0], x[..., 1]


def iq_features(x: Tensor) -> Tensor:
    """Amplitude and phase of IQ windows, each min–max normalised per window (paper eq. 1).

    Args:
        x: IQ windows, either complex ``(..., N)`` or real ``(..., N, 2)`` with I/Q last (see
            the module docstring). Typical shapes: ``(B, N)`` complex64 or ``(B, N, 2)``
            float32 with ``N = 128``. Any sample scale works (volts, ADC counts, normalised
            full scale): the normalisation removes it.

    Returns:
        float tensor ``(..., N, 2)`` on ``x``'s device: ``[..., 0]`` the amplitude and
        ``[..., 1]`` the phase (radians in (-pi, pi] before scaling), each scaled to [0, 1]
        over the N samples of its window. The dtype is the real counterpart of a complex
        input (complex64 -> float32, complex128 -> float64) or a real input's own dtype.
    """
    i, q = _as_iq_pair(x)
    out_dtype = i.dtype
    if out_dtype in _LOW_PRECISION:
        i, q = i.float(), q.float()
    amplitude = torch.hypot(i, q)       # (..., N)
    phase = torch.atan2(q, i)           # (..., N), radians
    feats = torch.stack((amplitude, phase), dim=-1)   # (..., N, 2)
    return minmax_normalise(feats, dim=-2).to(out_dtype)


# Amplitude scale of level_features: log1p(|x|) / log(1 + LEVEL_SPAN), so noise (|x| about
# 0.9) sits near 0.27, 0 dB SNR near 0.36, 20 dB near 1.0 and 40 dB near 1.9: the backbone's
# [0, 1] amplitude range for the levels a detector has to tell apart, compressed above.
LEVEL_SPAN = 10.0


def level_features(x: Tensor) -> Tensor:
    """Amplitude against the noise floor and phase: the ``amp-phase-level`` recipe.

    For a task where the level is the point (is there anything above the noise in this
    channel?), :func:`iq_features`' per-window min–max throws the evidence away: a channel
    inside a wide emitter looks as white as noise. Here the caller scales the windows to
    unit noise variance per sample (the engine divides by the stream's noise floor, the
    occupancy data generator by the true one), and the amplitude is kept on a log scale,
    ``log1p(|x|) / log(1 + LEVEL_SPAN)``, so it carries the SNR; the phase is min–max
    normalised per window as in :func:`iq_features`. Same shapes and dtypes as
    :func:`iq_features`.
    """
    i, q = _as_iq_pair(x)
    out_dtype = i.dtype
    if out_dtype in _LOW_PRECISION:
        i, q = i.float(), q.float()
    amplitude = torch.log1p(torch.hypot(i, q)) / torch.log1p(torch.tensor(LEVEL_SPAN))
    phase = minmax_normalise(torch.atan2(q, i), dim=-1)
    return torch.stack((amplitude, phase), dim=-1).to(out_dtype)


# Feature recipes by the name a checkpoint or adapter records (``input.features``).
FEATURE_RECIPES = {"amp-phase-minmax": iq_features, "amp-phase-level": level_features}


def features_for(recipe: str | None):
    """The feature function of ``recipe`` (None: the paper's ``amp-phase-minmax``).

    Raises:
        ValueError: an unknown recipe (the message lists the known ones).
    """
    try:
        return FEATURE_RECIPES[recipe or "amp-phase-minmax"]
    except KeyError:
        raise ValueError(f"unknown feature recipe {recipe!r}; known: "
                         f"{', '.join(FEATURE_RECIPES)}") from None


def windows_from_iq(x: Tensor, window_len: int = WINDOW_LEN, stride: int | None = None) -> Tensor:
    """Cut a stream of IQ samples into windows, as a view where possible (no copy).

    Samples after the last whole window are dropped, so ``T`` samples give
    ``n = max(0, (T - window_len) // stride + 1)`` windows; fewer than ``window_len`` samples
    give an empty ``(0, window_len)`` result, never an error.

    Args:
        x: complex ``(T,)`` samples, or real ``(T, 2)`` with I/Q last.
        window_len: samples per window (the model's N, 128 for the paper's models).
        stride: samples between the starts of consecutive windows; ``None`` means
            ``window_len`` (back to back, no overlap). A stride below ``window_len`` overlaps
            windows, one above it skips samples.

    Returns:
        complex ``(n, window_len)`` for complex input, or real ``(n, window_len, 2)`` for
        real input, ready for :func:`iq_features`.
    """
    stride = window_len if stride is None else stride
    if window_len < 1 or stride < 1:
        raise ValueError(f"window_len and stride must be positive, got {window_len}, {stride}")
    if x.is_complex():
        if x.dim() != 1:
            raise ValueError(f"complex IQ stream must be 1-D (T,), got {tuple(x.shape)}")
    elif x.dim() != 2 or x.shape[-1] != 2:
        raise ValueError(f"real IQ stream must be (T, 2) with I/Q last, got {tuple(x.shape)}")
    if x.shape[0] < window_len:
        return x.new_empty((0, window_len) + tuple(x.shape[1:]))
    w = x.unfold(0, window_len, stride)    # complex (n, window_len) | real (n, 2, window_len)
    return w if x.is_complex() else w.transpose(1, 2)   # real: (n, window_len, 2)
