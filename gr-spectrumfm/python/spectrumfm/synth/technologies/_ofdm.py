"""OFDM building blocks shared by the WiFi, LTE, NR and DVB-T generators.

* :func:`pick`: choose a bandwidth variant that fits the sample rate, or refuse;
* :func:`qam`, :func:`qpsk_from_bits`: random constellation points, unit mean power;
* :func:`msequence`, :func:`gold`: the binary sequences of the 3GPP specifications
  (TS 36.211 clause 7.2 and TS 38.211 clause 5.2.1 define the same length-31 Gold sequence);
* :func:`rbg_mask`: a random resource-block allocation in resource-block groups;
* :func:`add_cp` and :class:`Timeline`: cyclic prefixes and a periodic symbol timeline that
  renders only the symbols a window touches;
* :func:`window`: render at the standard's native rate, resample, cut ``n`` samples.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import scipy.fft

from spectrumfm.errors import InputError
from spectrumfm.synth.core import draw, resample, unit_power

#: Constellation sizes, by the names the generators take.
ORDERS = {"bpsk": 2, "qpsk": 4, "16qam": 16, "64qam": 64, "256qam": 256}

_GOLD_NC = 1600     # TS 38.211 5.2.1: the first 1600 outputs are discarded
_GOLD_MAX = 4096    # longest sequence asked for: NR PDSCH DMRS over 273 RB needs 3276 bits


def pick(rng: np.random.Generator, name: str, variants: dict, given: dict,
         samp_rate: float) -> dict:
    """A variant of a variable-bandwidth standard.

    Args:
        rng: drawn from when some fields of ``given`` are None.
        name: the technology id, for messages.
        variants: ``{(value, ...): occupied bandwidth in Hz}``, keys in the order of ``given``.
        given: ``{field: value or None}``, e.g. ``{"bandwidth_mhz": None}``.
        samp_rate: the output rate (Hz); a variant fits when its occupied bandwidth does.

    Returns:
        ``{field: value}``: the given values, the others drawn among the variants that fit.

    Raises:
        InputError: no variant has the given values, or none of those fits ``samp_rate``
            (the message names the lowest rate that would).
    """
    spec = ", ".join(f"{k}={v}" for k, v in given.items() if v is not None) or "any variant"
    keys = [k for k in variants
            if all(v is None or v == k[i] for i, v in enumerate(given.values()))]
    if not keys:
        known = "; ".join(", ".join(f"{f}={v}" for f, v in zip(given, k)) for k in variants)
        raise InputError(f"{name}: no variant with {spec} (one of: {known})")
    fits = [k for k in keys if variants[k] <= samp_rate]
    if not fits:
        need = min(variants[k] for k in keys)
        raise InputError(f"{name}: {spec} needs a sample rate of at least {need / 1e6:g} MS/s "
                         f"(occupied bandwidth), got {samp_rate / 1e6:g} MS/s")
    return dict(zip(given, draw(rng, None, fits)))


def qam(rng: np.random.Generator, order, shape) -> np.ndarray:
    """Random square-QAM symbols (BPSK for order 2), unit mean power, complex64.

    Args:
        order: constellation size (2, 4, 16, 64, 256), one for all or an int array that
            broadcasts to ``shape`` (a mix of constellations, e.g. one per resource block).
        shape: the output shape.
    """
    shape = (int(shape),) if np.isscalar(shape) else tuple(shape)
    u = rng.random((2,) + shape, dtype=np.float32)
    if np.isscalar(order):      # one constellation: scalar arithmetic, the common case
        m_i = 2 if order == 2 else math.isqrt(int(order))
        m_q = 1 if order == 2 else m_i
        scale = 1.0 if order == 2 else math.sqrt(2 * (order - 1) / 3)
    else:
        order = np.broadcast_to(np.asarray(order, dtype=np.float32), shape)
        bpsk = order == 2
        m_i = np.where(bpsk, 2.0, np.sqrt(order))
        m_q = np.where(bpsk, 1.0, m_i)
        scale = np.where(bpsk, 1.0, np.sqrt(2 * (order - 1) / 3))
    i = 2 * np.floor(u[0] * m_i) - (m_i - 1)
    q = 2 * np.floor(u[1] * m_q) - (m_q - 1)
    return ((i + 1j * q) / scale).astype(np.complex64)


def qpsk_from_bits(c: np.ndarray) -> np.ndarray:
    """QPSK of bit pairs, ``((1 - 2 c(2m)) + j (1 - 2 c(2m+1))) / sqrt(2)`` (TS 38.211 5.1.3)."""
    c = np.asarray(c, dtype=np.float32)
    return ((1 - 2 * c[0::2]) + 1j * (1 - 2 * c[1::2])).astype(np.complex64) / np.sqrt(2)


def msequence(taps, init, n: int) -> np.ndarray:
    """``x(i + L) = XOR of x(i + t) for t in taps``, ``L = init.shape[-1]``: the first ``n``
    values as uint8. ``init`` may hold several initial states (one per row)."""
    init = np.asarray(init, dtype=np.uint8)
    length = init.shape[-1]
    x = np.zeros(init.shape[:-1] + (n + length,), dtype=np.uint8)
    x[..., :length] = init
    step = length - max(taps)   # outputs of one block depend only on earlier blocks
    for i in range(0, n, step):
        j = min(i + step, n)
        acc = np.zeros_like(x[..., i:j])
        for t in taps:
            acc ^= x[..., i + t:j + t]
        x[..., i + length:j + length] = acc
    return x[..., :n]


@functools.lru_cache(maxsize=1)
def _gold_tables() -> tuple[np.ndarray, np.ndarray]:
    total = _GOLD_NC + _GOLD_MAX
    x1 = msequence((0, 3), [1] + [0] * 30, total)[_GOLD_NC:]
    # x2 is linear in its initial state: one basis sequence per bit of c_init
    x2 = msequence((0, 1, 2, 3), np.eye(31, dtype=np.uint8), total)[:, _GOLD_NC:]
    return x1, x2.astype(np.float32)


def gold(c_init: int, n: int) -> np.ndarray:
    """The pseudo-random sequence ``c(0..n-1)`` of TS 38.211 5.2.1 (= TS 36.211 7.2), uint8."""
    if n > _GOLD_MAX:
        raise ValueError(f"gold sequence of {n} bits asked for, at most {_GOLD_MAX}")
    x1, basis = _gold_tables()
    bits = ((int(c_init) >> np.arange(31)) & 1).astype(np.float32)
    x2 = (bits @ basis[:, :n]).astype(np.int64) & 1
    return (x1[:n] ^ x2).astype(np.uint8)


def rbg_mask(rng: np.random.Generator, n_rb: int, rbg: int, load: float,
             at_least_one: bool = False) -> np.ndarray:
    """Which of ``n_rb`` resource blocks are scheduled: each group of ``rbg`` blocks is on with
    probability ``load`` (allocation type 0 of TS 36.213 7.1.6.1 / TS 38.214 5.1.2.2.1)."""
    on = rng.random(-(-n_rb // rbg)) < load
    if at_least_one and not on.any():
        on[rng.integers(on.size)] = True
    return np.repeat(on, rbg)[:n_rb]


def add_cp(t: np.ndarray, cp) -> np.ndarray:
    """Symbols ``(m, nfft)`` as one stream, each led by a copy of its last ``cp[i]`` samples.

    Args:
        t: time-domain symbols, one per row.
        cp: cyclic-prefix length in samples, one for all rows or one per row.
    """
    nfft = t.shape[1]
    cp = np.broadcast_to(np.asarray(cp, dtype=np.int64), t.shape[:1])
    longest = int(cp.max())
    ext = np.concatenate([t[:, nfft - longest:], t], axis=1)     # (m, longest + nfft)
    if (cp == longest).all():
        return ext.ravel()
    keep = np.arange(longest + nfft) >= (longest - cp)[:, None]
    return ext[keep]


def ifft_rows(rows: np.ndarray) -> np.ndarray:
    """Inverse FFT of each row (bins in FFT order), scaled so that a row with unit power on
    every bin gives unit power per sample."""
    return scipy.fft.ifft(rows, axis=1, norm="ortho").astype(np.complex64, copy=False)


class Timeline:
    """OFDM symbols repeating with a period (a frame, a super-frame).

    Args:
        nfft: FFT size, samples of a symbol's useful part.
        cp: cyclic-prefix length in samples of each symbol of one period.
    """

    def __init__(self, nfft: int, cp):
        self.nfft = int(nfft)
        self.cp = np.asarray(cp, dtype=np.int64)
        ends = np.cumsum(self.cp + self.nfft)
        self.start = np.concatenate(([0], ends[:-1]))   # start of each symbol in the period
        self.period = int(ends[-1])

    def symbol_at(self, t: int) -> int:
        """The global index of the symbol holding sample ``t`` (0 = first of period 0)."""
        p, r = divmod(int(t), self.period)
        return p * len(self.cp) + int(np.searchsorted(self.start, r, side="right")) - 1

    def time_of(self, g: int) -> int:
        """The first sample (cyclic prefix included) of global symbol ``g``."""
        p, s = divmod(int(g), len(self.cp))
        return p * self.period + int(self.start[s])

    def render(self, a: int, length: int, grid: Callable):
        """Samples ``[a, a + length)`` of the stream.

        Args:
            a, length: the span, in samples from the start of period 0 (``a`` may be < 0).
            grid: ``grid(g) -> (rows, on)`` for the global symbol indices ``g`` (ascending):
                ``rows`` ``(len(g), nfft)`` in FFT bin order, ``on`` bool ``(len(g),)``,
                False where the transmitter is silent.

        Returns:
            ``(x, active)``: complex64 ``(length,)`` and bool ``(length,)``, or None for
            ``active`` when every sample is on.
        """
        g0, g1 = self.symbol_at(a), self.symbol_at(a + length - 1)
        g = np.arange(g0, g1 + 1)
        rows, on = grid(g)
        cp = self.cp[g % len(self.cp)]
        skip = a - self.time_of(g0)
        x = add_cp(ifft_rows(rows), cp)[skip:skip + length]
        if on.all():
            return x, None
        return x, np.repeat(on, cp + self.nfft)[skip:skip + length]


def window(render: Callable, native_rate: float, samp_rate: float, n: int, start: int):
    """``n`` samples at ``samp_rate`` of a stream built at ``native_rate``.

    Args:
        render: ``render(a, length) -> (x, active or None)``, native samples ``[a, a+length)``.
        native_rate: the standard's sample rate (Hz).
        samp_rate: the output rate (Hz).
        n: samples wanted.
        start: where the window starts in the stream, in native samples.

    Returns:
        ``(iq, active)``: complex64 ``(n,)`` with unit mean power over the active samples, and
        the bool mask at ``samp_rate`` (None when always on).
    """
    # Render a margin each side so the resampler's filter has settled inside the window.
    margin = 16 + math.ceil(10 * native_rate / samp_rate)
    n_nat = math.ceil(n * native_rate / samp_rate) + 2 * margin + 2
    x, active = render(start - margin, n_nat)
    y = resample(x, native_rate, samp_rate)
    k = round(margin * samp_rate / native_rate)
    iq = y[k:k + n]
    if active is not None:
        idx = np.rint((np.arange(n) + k) * (native_rate / samp_rate)).astype(np.int64)
        active = active[np.minimum(idx, n_nat - 1)]
        if active.all():
            active = None
    return unit_power(iq, active), active
