"""Emission cut-outs: a box of a stream, shifted to 0 Hz and resampled, as model windows.

The technology and modulation adapters were trained on windows at their own rates (the
technology adapter at 20 MS/s with the signal's real bandwidth, the modulation adapter with
the signal filling a fixed share of the rate), so an emission the energy detector found in a
capture at another rate is cut out (:func:`cut_out`) before the model sees it. The stream's
recent samples live in a :class:`Ring` buffer indexed by absolute sample number, so a box
can be cut out when it ends, after its samples went by.

Noise fill. The low-pass leaves nothing outside the box: resampled up (2.4 MS/s to the
technology adapter's 20 MS/s), most of the output band would be empty, a spectrum the model
never saw (its training windows carry white receiver noise across the whole band). Given
the capture's noise level, :func:`cut_out` emulates that receiver: white noise at the
capture's density, with the box's band removed by the same low-pass, is added to every
window, so the output has the capture's noise inside the box and the same density outside.

numpy and scipy only (the ML core: no GNU Radio, no Qt).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable

import numpy as np
from scipy.signal import fftconvolve, firwin

__all__ = ["cut_out", "window_span", "Ring"]

# Cut-out filter: pass-band margin over the box's width (the detector's edges are within
# about one FFT bin of the truth), the longest filter designed (its transition is then at
# least 3.3 / 4097 of the upsampled rate: 16 kHz at 20 MS/s), the largest upsampling.
_MARGIN = 0.1
_MAX_TAPS = 4097
_MAX_UP = 128


def _ratio(rate_out: float, rate_in: float) -> tuple[int, int]:
    """(up, down) with up <= _MAX_UP and up / down closest to rate_out / rate_in."""
    r = rate_out / rate_in
    f = Fraction(r).limit_denominator(1_000_000)
    if f.numerator and f.numerator <= _MAX_UP:
        return f.numerator, f.denominator
    best = (math.inf, 1, 1)
    for up in range(1, _MAX_UP + 1):
        down = max(1, round(up / r))
        err = abs(up / down - r) / r
        if err < best[0] - 1e-12:
            best = (err, up, down)
        if err < 1e-6:
            break
    return best[1], best[2]


def _design(samp_rate: float, width_hz: float, rate: float):
    """The cut-out's resampler: ``(up, down, rate_out, cutoff, trans, numtaps)``, the
    filter's cut-off and transition width in Hz at the upsampled rate."""
    up, down = _ratio(rate, samp_rate)
    rate_out = samp_rate * up / down
    fs_up = samp_rate * up
    edge = 0.45 * min(samp_rate, rate_out)            # keep clear of both Nyquist limits
    # Pass band to the box's edges plus the margin; the transition band beyond it is 40 %
    # as wide (shorter filters: the windows of a narrow box cost taps per output sample).
    passband = 0.5 * width_hz * (1.0 + _MARGIN)
    trans = max(0.4 * passband, 3.3 * fs_up / _MAX_TAPS)
    cutoff = min(passband + trans / 2, edge)
    numtaps = min(_MAX_TAPS, int(math.ceil(3.3 * fs_up / trans))) | 1
    return up, down, rate_out, cutoff, trans, numtaps


def window_span(samp_rate: float, width_hz: float, rate: float,
                window_len: int) -> tuple[int, int]:
    """Stream samples one window of :func:`cut_out` covers, and how far its filter reads
    beyond them on either side: ``(ceil(window_len * down / up), ceil(numtaps / 2 up))``."""
    up, down, _, _, _, numtaps = _design(samp_rate, width_hz, rate)
    return -(-window_len * down // up), -(-numtaps // (2 * up))


def cut_out(read: Callable[[int, int], np.ndarray], samp_rate: float, offset_hz: float,
            width_hz: float, sample_start: int, sample_count: int, rate: float,
            n_windows: int, window_len: int = 128, *,
            noise_var: float | None = None) -> tuple[np.ndarray, float]:
    """Windows of one emission at another rate, centred on 0 Hz.

    The box's samples are shifted by ``-offset_hz``, low-passed to ``width_hz`` (plus a 10 %
    margin) and resampled by a rational factor up / down (at most 128 up) to about
    ``rate``: one FIR filter at the upsampled rate does both, as ``resample_poly`` would, but
    only the output samples of the windows are computed (polyphase, :func:`_resample_at`),
    so a long box or a narrow one in a wide capture costs what its windows cost.

    Args:
        read: ``read(start, count)`` -> complex64 samples (absolute indices, zeros where
            there are none).
        samp_rate: the stream's rate, Hz.
        offset_hz: the box's centre from the tuned frequency, Hz.
        width_hz: the box's width, Hz.
        sample_start, sample_count: the box's span, samples of the stream.
        rate: wanted output rate, Hz.
        n_windows: at most this many windows, spread evenly over the box; fewer when the
            box is shorter (at least one, centred, taking the samples around a short packet).
        window_len: samples per window at the output rate.
        noise_var: the capture's noise variance per complex sample at ``samp_rate`` (the
            energy detector's floor); the band outside the box is filled with white noise
            of that density (variance ``noise_var * rate_out / samp_rate``), seeded by the
            box so a cut-out is repeatable. None: no fill.

    Returns:
        ``(windows, rate_out)``: complex64 ``(n, window_len)`` and the exact output rate.
    """
    up, down, rate_out, cutoff, trans, numtaps = _design(samp_rate, width_hz, rate)
    fs_up = samp_rate * up
    h = firwin(numtaps, cutoff, fs=fs_up) * up        # unit gain after zero-stuffing
    n_out = sample_count * up / down
    n = int(min(max(1, n_out // window_len), max(1, n_windows)))
    out = np.empty((n, window_len), np.complex64)
    w = 2.0 * math.pi * offset_hz / samp_rate
    for k in range(n):
        centre = sample_start + (k + 0.5) * sample_count / n
        # Output q of this window is at input time sample_start + q * down / up.
        q0 = int(round((centre - sample_start) * up / down - window_len / 2))
        out[k] = _resample_at(read, sample_start, q0 + np.arange(window_len), h, up, down, w)
    if noise_var is not None and noise_var > 0 and rate_out > (1.0 + _MARGIN) * width_hz:
        seed = (int(sample_start), int(round(abs(offset_hz))), int(round(width_hz)))
        out += _outside_noise(n, window_len, noise_var * rate_out / samp_rate, rate_out,
                              cutoff, trans, np.random.default_rng(seed))
    return out, rate_out


def _outside_noise(n: int, window_len: int, var: float, rate: float, cutoff: float,
                   trans: float, rng: np.random.Generator) -> np.ndarray:
    """``(n, window_len)`` complex white noise of variance ``var`` at ``rate`` less its part
    within ``cutoff`` Hz: the complement (delta - h) of the cut-out's low-pass, designed at
    the output rate with the same cut-off and transition width in Hz."""
    numtaps = min(_MAX_TAPS, int(math.ceil(3.3 * rate / trans))) | 1
    g = -firwin(numtaps, min(cutoff, 0.49 * rate), fs=rate)
    g[numtaps // 2] += 1.0
    shape = (n, window_len + numtaps - 1)
    z = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * math.sqrt(var / 2)
    return fftconvolve(z, g[None, :], mode="valid", axes=1).astype(np.complex64)  # (n, N)


def _resample_at(read, origin: int, q: np.ndarray, h: np.ndarray, up: int, down: int,
                 w: float) -> np.ndarray:
    """Outputs ``q`` of ``resample_poly(mix(x[origin:]), up, down, window=h / up)``.

    ``mix`` multiplies sample i (absolute index) by ``exp(-1j w i)``. Output q is the
    zero-phase filter's value at upsampled index ``m = q down + (len(h) - 1) // 2``; only
    the taps ``h[r + t up]`` (``r = m mod up``) meet input samples, the sample ``(m - r) / up
    - t`` after ``origin``.
    """
    T = -(-h.size // up)
    taps = np.zeros(T * up)
    taps[:h.size] = h
    m = q * down + (h.size - 1) // 2
    r, base = m % up, m // up                                    # (n,), (n,)
    lo, hi = int(base.min()) - T + 1, int(base.max()) + 1
    idx = origin + lo + np.arange(hi - lo, dtype=np.int64)
    # The mix's phase runs on the stream's absolute index (mod 2 pi, in float64).
    x = read(origin + lo, hi - lo) * np.exp(-1j * np.mod(w * idx.astype(np.float64), 2 * np.pi))
    x = x.astype(np.complex64)
    frames = np.lib.stride_tricks.sliding_window_view(x, T)     # (len - T + 1, T), a view
    y = np.empty(q.size, np.complex64)
    for phase in np.unique(r):               # outputs of one phase share their taps
        sel = np.flatnonzero(r == phase)
        # frames[b - lo - T + 1] holds x[b - T + 1 .. b]: the taps meet it reversed.
        y[sel] = frames[base[sel] - lo - T + 1] @ taps[phase::up][::-1].astype(np.complex64)
    return y


class Ring:
    """The last ``capacity`` samples of the stream, indexed by absolute sample number."""

    def __init__(self, capacity: int):
        self.buf = np.zeros(int(capacity), np.complex64)
        self.begin = self.end = None               # valid: [max(begin, end - capacity), end)

    @property
    def started(self) -> bool:
        return self.end is not None

    @property
    def oldest(self) -> int:
        return max(self.begin, self.end - self.buf.size)

    def reset(self, at: int) -> None:
        self.begin = self.end = int(at)

    def forget(self) -> None:
        """Samples before now are no longer continuous with what follows (a gap, a retune)."""
        if self.started:
            self.begin = self.end

    def write(self, x: np.ndarray) -> None:
        cap, n = self.buf.size, x.size                 # n <= cap (process() chunks)
        i = self.end % cap
        first = min(n, cap - i)
        self.buf[i:i + first] = x[:first]
        self.buf[:n - first] = x[first:]
        self.end += n

    def read(self, start: int, count: int) -> np.ndarray:
        out = np.zeros(max(0, int(count)), np.complex64)
        if not self.started:
            return out
        lo, hi = max(int(start), self.oldest), min(int(start) + int(count), self.end)
        if hi <= lo:
            return out
        cap = self.buf.size
        i, n = lo % cap, hi - lo
        first = min(n, cap - i)
        at = lo - int(start)
        out[at:at + first] = self.buf[i:i + first]
        out[at + first:at + n] = self.buf[:n - first]
        return out
