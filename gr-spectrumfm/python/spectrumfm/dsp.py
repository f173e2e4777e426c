"""Spectral estimation shared by the spectrum tap and the energy detector (numpy/scipy only).

Two normalisations are used, each for what it measures:

* ``power_spectrum_db`` reads *tone amplitude*: a complex exponential of amplitude 1 centred
  on a bin reads 0 dB whatever the window or FFT size (divide by ``(sum w)**2``). This is what
  a spectrum display shows (gqrx, GNU Radio's Qt sinks): carriers keep their level when the
  FFT size changes, and white noise of variance ``s2`` per sample reads
  ``10*log10(s2) + noise_bin_gain_db(window, n)`` dB per bin.
* ``frame_powers`` reads *noise power*: white noise of variance ``s2`` per complex sample gives
  a mean of ``s2`` in every bin (divide by ``sum w**2``). Detectors compare bins to the noise
  floor, so this scale makes the floor simply the noise variance per sample.

Frequency order is always ``fftshift``-ed: bin ``k`` of ``n`` is centred at
``(k - n // 2) * samp_rate / n`` Hz from the tuned frequency (DC in the middle).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
import scipy.signal

WINDOWS = ("hann", "hamming", "blackman", "blackmanharris", "flattop", "rect")

# Power floor before the logarithm: -200 dB is far below what float32 IQ can carry
# (about -150 dB relative to full scale), so it only ever replaces exact zeros.
POWER_FLOOR = 1e-20


@functools.lru_cache(maxsize=32)
def _window(name: str, n: int) -> np.ndarray:
    if name not in WINDOWS:
        raise ValueError(f"unknown window {name!r}; expected one of {', '.join(WINDOWS)}")
    if n < 1:
        raise ValueError(f"window length must be positive, got {n}")
    # Periodic ("DFT-even") windows: the right kind for spectral analysis, where the FFT
    # treats each frame as one period (scipy's fftbins=True).
    w = scipy.signal.get_window("boxcar" if name == "rect" else name, n, fftbins=True)
    w = w.astype(np.float32)
    w.flags.writeable = False   # cached and shared: nobody may scale it in place
    return w


def get_window(name: str, n: int) -> np.ndarray:
    """A periodic spectral-analysis window of ``n`` samples as read-only float32.

    Args:
        name: one of ``WINDOWS`` ("rect" is the rectangular window).
        n: window length in samples.
    """
    return _window(str(name), int(n))


def _as_window(window, n: int) -> np.ndarray:
    if isinstance(window, str):
        return get_window(window, n)
    w = np.asarray(window, dtype=np.float32)
    if w.shape != (n,):
        raise ValueError(f"window has shape {w.shape}, expected ({n},)")
    return w


def noise_bin_gain_db(window, n: int) -> float:
    """Level in dB at which unit-variance complex white noise reads in ``power_spectrum_db``.

    ``10*log10(sum(w**2) / sum(w)**2)``: minus the FFT's processing gain, e.g. -22.3 dB for a
    1024-point Hann window. Add ``10*log10(variance)`` for other noise levels; it also converts
    the energy detector's ``noise_floor_db`` (noise variance per sample) to a display's scale.
    """
    w = _as_window(window, n).astype(np.float64)
    return float(10.0 * np.log10(np.sum(w * w) / np.sum(w) ** 2))


def power_spectrum_db(x: np.ndarray, window="hann", fft_size: int | None = None) -> np.ndarray:
    """Averaged power spectrum in dB, one row per input row.

    Every one of the ``n_avg`` FFTs of a row contributes (Welch without overlap), so a burst
    shorter than the row still shows, at its duty-cycle-weighted power.

    Args:
        x: complex IQ, shape ``(rows, n_avg, fft)`` or ``(rows, n_avg * fft)``; amplitude in
            full-scale units (1.0 = full scale).
        window: a name from ``WINDOWS`` or an array of ``fft`` samples.
        fft_size: FFT length; needed only for 2-D ``x`` with a window given by name.

    Returns:
        float32 ``(rows, fft)``: dB relative to a full-scale tone, DC in the middle
        (``fftshift``). A complex tone ``a*exp(2j*pi*k*t/fft)`` on bin ``k`` reads
        ``20*log10(a)``; exact zeros read -200 dB.
    """
    x = np.asarray(x)
    if x.ndim == 2:
        n = fft_size if fft_size is not None else (None if isinstance(window, str) else len(window))
        if n is None:
            raise ValueError("2-D input needs fft_size (or a window array) to split rows")
        if x.shape[1] % n:
            raise ValueError(f"row length {x.shape[1]} is not a multiple of fft_size {n}")
        x = x.reshape(x.shape[0], -1, n)                       # (rows, n_avg, fft)
    elif x.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D array, got shape {x.shape}")
    n = x.shape[2]
    w = _as_window(window, n)
    spec = scipy.fft.fft(x.astype(np.complex64, copy=False) * w, axis=-1)   # (rows, n_avg, fft)
    power = (spec.real ** 2 + spec.imag ** 2).mean(axis=1)                 # (rows, fft)
    scale = np.float32(1.0 / float(np.sum(w, dtype=np.float64)) ** 2)    # tone on a bin: 0 dB
    power = np.fft.fftshift(power, axes=-1) * scale
    return (10.0 * np.log10(np.maximum(power, POWER_FLOOR))).astype(np.float32)


def frame_powers(x: np.ndarray, window="hann", fft_size: int = 256) -> np.ndarray:
    """Short-time power spectra of consecutive non-overlapping frames (the STFT grid).

    Args:
        x: 1-D complex IQ, length a multiple of ``fft_size`` samples.
        window: a name from ``WINDOWS`` or an array of ``fft_size`` samples.
        fft_size: frame and FFT length in samples.

    Returns:
        float32 ``(n_frames, fft_size)`` linear power per bin, DC in the middle, scaled by
        ``1 / sum(w**2)`` so that white noise of variance ``s2`` (per complex sample) has mean
        ``s2`` in every bin, and each bin is ``s2 * Exp(1)`` distributed (a complex Gaussian
        bin's power), independent across frames.
    """
    x = np.asarray(x)
    if x.ndim != 1 or x.size % fft_size:
        raise ValueError(f"expected 1-D input of whole {fft_size}-sample frames, got {x.shape}")
    w = _as_window(window, fft_size)
    frames = x.astype(np.complex64, copy=False).reshape(-1, fft_size)   # (n_frames, fft)
    spec = scipy.fft.fft(frames * w, axis=-1)
    power = np.fft.fftshift(spec.real ** 2 + spec.imag ** 2, axes=-1)
    return (power * np.float32(1.0 / float(np.sum(w.astype(np.float64) ** 2)))).astype(np.float32)


def equivalent_dof(window: np.ndarray, n_frames: int, n_bins: int) -> float:
    """Equivalent degrees of freedom of the mean of ``frame_powers`` over a block of
    ``n_frames`` frames x ``n_bins`` adjacent bins, on white noise.

    The block mean is a weighted sum of exponentials; adjacent bins are correlated through
    the window (Hann: |rho(1)|**2 = 4/9, |rho(2)|**2 = 1/36), frames are independent. Matching
    mean and variance (Satterthwaite) gives ``mean / s2 ~ Gamma(L, 1/L)`` with
    ``L = n_frames * n_bins**2 / sum_ij |rho(i - j)|**2``; a rectangular window gives
    ``L = n_frames * n_bins``.
    """
    w2 = np.asarray(window, dtype=np.float64) ** 2
    lags = np.arange(n_bins)
    phase = np.exp(-2j * np.pi * np.outer(lags, np.arange(w2.size)) / w2.size)
    r2 = (np.abs(phase @ w2) / w2.sum()) ** 2          # |rho(d)|**2 between bins d apart
    return float(n_frames * n_bins ** 2 / (n_bins + 2.0 * np.sum((n_bins - lags[1:]) * r2[1:])))
