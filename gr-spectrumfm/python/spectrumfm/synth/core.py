"""What every waveform generator shares: the :class:`Signal` it returns, the registry, and
the few DSP helpers (resampling, pulse shapes, frequency shifts, power) they are built from.

A generator is a pure function ``fn(rng, samp_rate, n, **params) -> Signal``: the same
generator state and parameters give the same samples. Parameters left at ``None`` are drawn
from ``rng`` within the ranges the generator documents, and the values used are reported in
``Signal.params`` so a dataset can store them beside each example.

Power convention: ``Signal.iq`` has unit mean power over the samples where the emitter
transmits (``Signal.active``), so SNR and scene levels are set by scaling it once; the
in-band SNR of :func:`spectrumfm.synth.impairments.add_awgn` is defined over
``Signal.bandwidth`` (see ``docs/generator.md``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from fractions import Fraction
from typing import Callable

import numpy as np
import scipy.signal

from spectrumfm.errors import InputError

__all__ = ["Signal", "WaveformSpec", "register", "get", "names", "FAMILIES",
           "resample", "rrc_taps", "gaussian_taps", "freq_shift", "unit_power",
           "occupied_bandwidth", "draw"]

#: The families a waveform belongs to; ``spectrumfm generate --family`` also has
#: ``sensing`` (noise and signals) and ``anomaly`` (built from these).
FAMILIES = ("modulation", "technology")


@dataclasses.dataclass
class Signal:
    """One emitter's baseband samples at the requested rate.

    Attributes:
        iq: complex64 ``(n,)``, unit mean power over the active samples.
        bandwidth: occupied bandwidth in Hz (the band holding 99 % of the power, as the
            standard defines it where it does), the band the in-band SNR is measured over.
        active: bool ``(n,)`` where the emitter transmits, or None when it always does.
        params: the parameters used (numbers or strings), e.g. ``{"sps": 8, "rolloff": 0.35}``.
    """

    iq: np.ndarray
    bandwidth: float
    active: np.ndarray | None = None
    params: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class WaveformSpec:
    """A registered waveform.

    Attributes:
        family: ``"modulation"`` or ``"technology"``.
        name: its id in that family (``"qpsk"``, ``"lte"``); a dataset's class name.
        fn: the generator, ``fn(rng, samp_rate, n, **params) -> Signal``.
        min_rate: the lowest sample rate (Hz) that holds its narrowest variant; below it
            :meth:`generate` refuses with a line that says so.
        description: one line for ``spectrumfm generate --list``.
    """

    family: str
    name: str
    fn: Callable[..., Signal]
    min_rate: float
    description: str

    def generate(self, rng: np.random.Generator, samp_rate: float, n: int,
                 **params) -> Signal:
        """``n`` samples at ``samp_rate``; checks the rate and the generator's output."""
        if not samp_rate >= self.min_rate:
            raise InputError(f"{self.name}: sample rate {samp_rate / 1e6:g} MS/s is too low "
                             f"for its bandwidth; use at least {self.min_rate / 1e6:g} MS/s")
        self.check_params(params)
        sig = self.fn(rng, float(samp_rate), int(n), **params)
        if sig.iq.shape != (n,):
            raise RuntimeError(f"{self.family}:{self.name} returned {sig.iq.shape} samples, "
                               f"asked for {n}")
        sig.iq = np.ascontiguousarray(sig.iq, dtype=np.complex64)
        return sig


    @property
    def keywords(self) -> frozenset:
        """The parameters the generator takes (after ``rng, samp_rate, n``)."""
        return _keywords(self.fn)

    def check_params(self, params: dict, where: str | None = None) -> None:
        """:class:`InputError` naming a parameter the generator does not take."""
        takes = self.keywords
        for key in params:
            if key not in takes:
                raise InputError(f"{where or self.name}: {self.name} has no parameter {key!r} "
                                 f"(it takes {', '.join(sorted(takes)) or 'none'})")


@functools.lru_cache(maxsize=None)
def _keywords(fn) -> frozenset:
    sig = inspect.signature(fn)
    return frozenset(list(sig.parameters)[3:])   # after rng, samp_rate, n


_REGISTRY: dict[tuple[str, str], WaveformSpec] = {}


def register(family: str, name: str, *, min_rate: float, description: str):
    """Decorator that registers a generator under ``family:name``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")

    def wrap(fn):
        key = (family, name)
        if key in _REGISTRY and _REGISTRY[key].fn is not fn:
            raise ValueError(f"{family}:{name} registered twice")
        _REGISTRY[key] = WaveformSpec(family, name, fn, float(min_rate), description)
        return fn
    return wrap


def _load_all() -> None:
    # The generators register themselves on import; importing here (not at module top)
    # keeps core importable by them without a cycle.
    from spectrumfm.synth import modulations, technologies  # noqa: F401


def get(family: str, name: str) -> WaveformSpec:
    """The waveform ``name`` of ``family``; :class:`InputError` listing the ids if unknown."""
    _load_all()
    if family not in FAMILIES:
        raise InputError(f"unknown family {family!r} (one of {', '.join(FAMILIES)})")
    try:
        return _REGISTRY[(family, name)]
    except KeyError:
        raise InputError(f"unknown {family} id {name!r} (one of "
                         f"{', '.join(names(family))})") from None


def names(family: str) -> list[str]:
    """The ids of ``family`` in their canonical order (RadioML 2018 order for modulations)."""
    _load_all()
    return [name for (fam, name) in _REGISTRY if fam == family]


def draw(rng: np.random.Generator, value, choices=None, *, low=None, high=None,
         integer: bool = False):
    """A parameter: ``value`` when given, else a draw from ``choices`` or ``[low, high]``."""
    if value is not None:
        return value
    if choices is not None:
        c = choices[int(rng.integers(len(choices)))]
        return c.item() if isinstance(c, np.generic) else c
    if integer:
        return int(rng.integers(low, high + 1))
    return float(rng.uniform(low, high))


# -- DSP helpers -----------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    r = Fraction(fs_out / fs_in).limit_denominator(1000)
    return r.numerator, r.denominator


@functools.lru_cache(maxsize=64)
def _resample_taps(up: int, down: int) -> np.ndarray:
    # The filter scipy's resample_poly designs by default (Kaiser, beta 5, 10 lobes each
    # side), designed once per ratio here: resample_poly would design it on every call, and
    # for 30.72 -> 25 MS/s (625/768) that is 15,361 taps, most of an example's time.
    m = max(up, down)
    taps = scipy.signal.firwin(2 * 10 * m + 1, 1.0 / m, window=("kaiser", 5.0))
    taps.flags.writeable = False
    return taps


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample complex ``x`` from ``fs_in`` to ``fs_out`` (polyphase, scipy).

    The ratio is taken as a fraction with a denominator up to 1000 (error below 1e-6 for the
    rates in use); ``len(out) = ceil(len(x) * up / down)``.
    """
    if fs_in == fs_out:
        return np.asarray(x, dtype=np.complex64)
    up, down = _ratio(float(fs_in), float(fs_out))
    if up == down:
        return np.asarray(x, dtype=np.complex64)
    y = scipy.signal.resample_poly(np.asarray(x, dtype=np.complex64), up, down,
                                   window=_resample_taps(up, down))
    return y.astype(np.complex64, copy=False)


@functools.lru_cache(maxsize=128)
def rrc_taps(rolloff: float, sps: int, span: int = 8) -> np.ndarray:
    """Root-raised-cosine taps with unit energy, ``span`` symbols long (``span*sps+1`` taps)."""
    beta = float(rolloff)
    t = np.arange(-span * sps // 2, span * sps // 2 + 1, dtype=np.float64) / sps
    taps = np.empty_like(t)
    for i, ti in enumerate(t):
        if abs(ti) < 1e-12:
            taps[i] = 1.0 - beta + 4.0 * beta / math.pi
        elif beta > 0 and abs(abs(4.0 * beta * ti) - 1.0) < 1e-9:
            taps[i] = beta / math.sqrt(2) * ((1 + 2 / math.pi) * math.sin(math.pi / (4 * beta))
                                             + (1 - 2 / math.pi) * math.cos(math.pi / (4 * beta)))
        else:
            taps[i] = (math.sin(math.pi * ti * (1 - beta))
                       + 4 * beta * ti * math.cos(math.pi * ti * (1 + beta))) / (
                math.pi * ti * (1 - (4 * beta * ti) ** 2))
    taps /= np.sqrt(np.sum(taps ** 2))
    taps = taps.astype(np.float32)
    taps.flags.writeable = False
    return taps


@functools.lru_cache(maxsize=128)
def gaussian_taps(bt: float, sps: int, span: int = 4) -> np.ndarray:
    """Gaussian pulse-shaping taps (GMSK/GFSK), summing to 1, ``span`` symbols long."""
    t = np.arange(-span * sps // 2, span * sps // 2 + 1, dtype=np.float64) / sps
    sigma = math.sqrt(math.log(2)) / (2 * math.pi * bt)
    taps = np.exp(-t ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()
    taps = taps.astype(np.float32)
    taps.flags.writeable = False
    return taps


def freq_shift(x: np.ndarray, f_hz: float, samp_rate: float, phase: float = 0.0) -> np.ndarray:
    """``x`` moved by ``f_hz`` (complex exponential), starting at ``phase`` radians."""
    if f_hz == 0 and phase == 0:
        return np.asarray(x, dtype=np.complex64)
    n = np.arange(len(x), dtype=np.float64)
    return (x * np.exp(1j * (2 * np.pi * f_hz / samp_rate * n + phase))).astype(np.complex64)


def unit_power(x: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
    """``x`` scaled to unit mean power over ``active`` (all samples when None)."""
    x = np.asarray(x, dtype=np.complex64)
    seg = x if active is None else x[active]
    p = float(np.vdot(seg, seg).real) / seg.size if seg.size else 0.0
    return x if p <= 0 else (x / np.float32(math.sqrt(p))).astype(np.complex64, copy=False)


def occupied_bandwidth(x: np.ndarray, samp_rate: float, fraction: float = 0.99,
                       nfft: int = 1024) -> float:
    """The width (Hz) of the band around the spectrum's centre holding ``fraction`` of the
    power (Welch PSD; the band is cut symmetrically in power from both edges)."""
    f, p = scipy.signal.welch(x, fs=samp_rate, nperseg=min(nfft, len(x)),
                              return_onesided=False, scaling="spectrum")
    order = np.argsort(f)
    f, p = f[order], p[order]
    c = np.cumsum(p) / np.sum(p)
    lo = f[np.searchsorted(c, (1 - fraction) / 2)]
    hi = f[min(np.searchsorted(c, 1 - (1 - fraction) / 2), len(f) - 1)]
    return float(hi - lo + samp_rate / len(f))
