"""Spectrogram features for LWM-Spectro, written once in PyTorch for training and inference.

The chain is the paper's (§II-B, eq. 7–10): a short-time Fourier transform with an analysis
window of ``win_length`` samples every ``hop`` samples -> power ``|Y|^2`` -> dB ->
normalisation -> a ``T x K`` image, time down the rows and frequency across the columns.

Defaults, and why:

* ``n_fft = win_length = 128``: 128 frequency bins, the paper's image width. Complex
  baseband has no mirror image, so the whole two-sided spectrum is kept and ``fftshift``-ed:
  column 0 is ``-fs/2``, column ``K/2`` is DC, the last column ``fs/2 - fs/K``.
* ``hop = 64``: half the window. A periodic Hann window at 50 % overlap adds up to a
  constant, so every input sample weighs the same in the image; 128 frames then span
  ``samples_for_frames(128) = 8256`` samples (0.41 ms at 20 MS/s, where a WiFi OFDM symbol
  lasts 4 us and an LTE one about 71 us); hop = win_length would need twice as many samples
  and leave those near the frame edges almost unweighted.
* ``window = "hann"``: sidelobes fall off fast enough that a strong carrier does not paint
  its whole row, at the price of a main lobe twice the rectangular window's.
* Power is divided by the window's energy ``sum(w^2)``, so white noise of power ``sigma^2``
  reads ``10 log10(sigma^2)`` dB on average per bin whatever the window and its length.
* A floor of ``POWER_FLOOR`` (-120 dB) keeps an all-zero capture finite.
* Normalisation is ``(dB - mean) / std`` with **corpus** statistics: one mean and one std in
  dB, computed once over the training corpus by :func:`corpus_stats` and stored in the
  model's config. Per-image z-scoring would take out each image's own level and rescale
  its contrast between signal and noise floor, the very cues of the SNR tasks; with fixed
  statistics 20 dB more power shifts every pixel by the same 20 / std.

Input is complex ``(..., S)`` IQ (complex64 or complex128), or real ``(..., S, 2)`` with I/Q
last as in :mod:`spectrumfm.features`. Everything runs on the input's device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["spectrogram_db", "normalise_db", "spectrogram_image", "corpus_stats",
           "samples_for_frames", "frames_for_samples", "WINDOWS", "POWER_FLOOR",
           "N_FFT", "WIN_LENGTH", "HOP", "N_FRAMES"]

N_FFT = 128        # K, frequency bins: the paper's image width
WIN_LENGTH = 128   # N_w, samples per analysis window
HOP = 64           # R, samples between frame starts: half a window (see the module docstring)
N_FRAMES = 128     # T, frames per image: the paper's image height

# Smallest power (linear, per bin after the window-energy division) before the log: -120 dB,
# below the quantisation noise of any 16-bit capture in full-scale or ADC-count units.
POWER_FLOOR = 1e-12

WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "rectangular": lambda n, dtype=None, device=None: torch.ones(n, dtype=dtype, device=device),
}


def samples_for_frames(n_frames: int = N_FRAMES, win_length: int = WIN_LENGTH,
                       hop: int = HOP) -> int:
    """IQ samples that make exactly ``n_frames`` STFT frames: ``(n_frames - 1) * hop + win_length``.

    The inverse of eq. 8; the default 128 x 128 image takes 8256 samples.
    """
    if min(n_frames, win_length, hop) < 1:
        raise ValueError(f"n_frames, win_length and hop must be positive, "
                         f"got {n_frames}, {win_length}, {hop}")
    return (n_frames - 1) * hop + win_length


def frames_for_samples(n_samples: int, win_length: int = WIN_LENGTH, hop: int = HOP) -> int:
    """STFT frames in ``n_samples`` samples (eq. 8): ``(n_samples - win_length) // hop + 1``,
    0 when there are fewer samples than one window (no padding, as in the paper)."""
    if win_length < 1 or hop < 1:
        raise ValueError(f"win_length and hop must be positive, got {win_length}, {hop}")
    return max(0, (n_samples - win_length) // hop + 1)


def _as_complex(x: Tensor) -> Tensor:
    if x.is_complex():
        return x
    if not x.is_floating_point():
        raise TypeError(f"IQ input must be complex or floating point, got {x.dtype}")
    if x.dim() < 2 or x.shape[-1] != 2:
        raise ValueError(
            f"real IQ input must have I/Q last, shape (..., S, 2); got {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()               # no half-precision complex FFT on the CPU
    return torch.complex(x[..., 0], x[..., 1])


def spectrogram_db(x: Tensor, n_fft: int = N_FFT, win_length: int = WIN_LENGTH,
                   hop: int = HOP, window: str = "hann") -> Tensor:
    """Power spectrogram in dB, frequency fftshifted from ``-fs/2`` to ``fs/2`` (eq. 7–9).

    Args:
        x: IQ, complex ``(..., S)`` or real ``(..., S, 2)`` with I/Q last; any sample scale
            (the dB values carry it).
        n_fft: K, FFT size and number of frequency bins, at least ``win_length`` (a longer
            FFT zero-pads the window and interpolates the spectrum).
        win_length: N_w, analysis window length in samples.
        hop: R, samples between the starts of consecutive frames.
        window: one of ``WINDOWS``: ``"hann"``, ``"hamming"``, ``"blackman"``,
            ``"rectangular"``.

    Returns:
        real ``(..., T, K)`` in dB on ``x``'s device, float32 (float64 for complex128 input),
        with ``T = frames_for_samples(S, win_length, hop)``: ``10 log10(|Y|^2 / sum(w^2))``,
        floored at ``POWER_FLOOR``. Row t starts at sample ``t * hop``; column ``K/2`` is DC
        and column ``K/2 + k`` the frequency ``k * fs / K``.
    """
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; known: {', '.join(WINDOWS)}")
    if win_length < 1 or hop < 1:
        raise ValueError(f"win_length and hop must be positive, got {win_length}, {hop}")
    if n_fft < win_length:
        raise ValueError(f"n_fft {n_fft} must be at least win_length {win_length}")
    x = _as_complex(x)
    if x.shape[-1] < win_length:
        raise ValueError(f"{x.shape[-1]} samples are fewer than one window of {win_length}")
    w = WINDOWS[window](win_length, dtype=x.real.dtype, device=x.device)
    # Framed by hand rather than with torch.stft: for n_fft > win_length torch.stft slides
    # frames of n_fft samples (the window centred in them), which changes eq. 8's frame count;
    # here a frame is win_length samples, zero-padded at the end to n_fft by the FFT.
    frames = x.unfold(-1, win_length, hop) * w                          # (..., T, N_w)
    Y = torch.fft.fft(frames, n=n_fft, dim=-1)                          # (..., T, K)
    power = (Y.real.square() + Y.imag.square()) / w.square().sum()     # (..., T, K)
    power = torch.fft.fftshift(power, dim=-1)                           # -fs/2 .. fs/2
    return 10.0 * torch.log10(power.clamp_min(POWER_FLOOR))


def normalise_db(db: Tensor, mean: float, std: float) -> Tensor:
    """``(db - mean) / std`` with corpus statistics in dB (see :func:`corpus_stats`).

    Raises:
        ValueError: ``std`` is not a positive finite number or ``mean`` is not finite.
    """
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a positive finite number of dB, got {std}")
    if not math.isfinite(mean):
        raise ValueError(f"mean must be a finite number of dB, got {mean}")
    return (db - mean) / std


def spectrogram_image(x: Tensor, mean: float, std: float, n_fft: int = N_FFT,
                      win_length: int = WIN_LENGTH, hop: int = HOP,
                      window: str = "hann") -> Tensor:
    """The model input: :func:`spectrogram_db` normalised by :func:`normalise_db`.

    Give ``samples_for_frames(T, win_length, hop)`` samples for a ``T x n_fft`` image.

    Returns:
        real ``(..., T, K)``: dimensionless, about zero mean and unit variance over the corpus
        the statistics came from.
    """
    return normalise_db(spectrogram_db(x, n_fft, win_length, hop, window), mean, std)


def corpus_stats(spectrograms: Iterable[Tensor]) -> tuple[float, float]:
    """Mean and standard deviation in dB over every value of every spectrogram.

    Args:
        spectrograms: dB spectrograms from :func:`spectrogram_db` (not yet normalised), any
            shapes, e.g. batches ``(B, T, K)`` from a loader over the training corpus. Read
            once; the running sums are float64 and merged batch by batch (Chan et al.), so
            millions of images lose no precision.

    Returns:
        ``(mean, std)`` in dB as floats, the population std (divisor = count), to store in
        the model's config.

    Raises:
        ValueError: the corpus is empty, holds a non-finite value, or is constant (std 0).
    """
    count, mean, m2 = 0, 0.0, 0.0
    for s in spectrograms:
        s = s.detach().to(torch.float64).flatten()
        n = s.numel()
        if n == 0:
            continue
        if not torch.isfinite(s).all():
            raise ValueError("a spectrogram holds a non-finite value")
        b_mean = s.mean().item()
        b_m2 = (s - b_mean).square().sum().item()
        total = count + n
        delta = b_mean - mean
        mean += delta * n / total
        m2 += b_m2 + delta * delta * count * n / total
        count = total
    if count == 0:
        raise ValueError("corpus_stats got no spectrogram values")
    std = math.sqrt(m2 / count)
    if std == 0:
        raise ValueError("the corpus is constant (std 0 dB): it cannot normalise anything")
    return mean, std
