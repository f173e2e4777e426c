"""Channel and receiver impairments, and AWGN at an in-band SNR; each one off by default.

An example goes through ``impair``: the channel (:func:`apply_channel`: multipath, timing
and sample-rate offset, carrier offset and phase, phase noise), then noise (:func:`add_awgn`),
then the receiver (:func:`apply_receiver`: gain change, IQ imbalance, DC offset, clipping).

In-band SNR: the signal's mean power over the samples where it transmits, over the power of
the noise inside its occupied bandwidth. The noise is white over the whole sample rate, so
its total power is ``Ps * samp_rate / (bandwidth * snr)``; a signal as wide as the rate has
its in-band SNR equal to the ordinary one.

Every numeric setting of :class:`Impairments` is a number, a ``[lo, hi]`` range drawn
uniformly per example, or ``{one_of: [v1, v2, ...]}``, one of the listed values drawn with
equal chance per example (``speed_kmh: {one_of: [3, 120]}``: pedestrian or vehicular, with
nothing in between, for a task whose classes are those regimes). The values used come back
as numbers under the keys of :data:`PARAM_KEYS`, 0 (or NaN where ``None`` means off) for
what is off, so a dataset can store one column per key.

Multipath follows the 3GPP TR 38.901 (v17) tapped delay lines TDL-A, TDL-B and TDL-C (Tables
7.7.2-1 to -3, all non-line-of-sight): the normalised delays are scaled by the delay spread,
each tap fades as Rayleigh with a Jakes (Clarke) Doppler spectrum from a sum of sinusoids,
and fractional delays are band-limited (windowed-sinc) at the sample rate. The tables are
written here rather than taken from a library (NeoRadium, Sionna) to keep the ML core on
numpy and scipy alone.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.synth.core import Signal

__all__ = ["Impairments", "OneOf", "apply_channel", "add_awgn", "apply_receiver", "impair",
           "MULTIPATH_PROFILES", "PARAM_KEYS"]

#: Multipath profiles; the ``multipath`` key of the used parameters is 1 + this index.
MULTIPATH_PROFILES = ("tdl-a", "tdl-b", "tdl-c")
#: The keys of the parameters ``impair`` reports, in order (channel, then receiver).
PARAM_KEYS = ("multipath", "delay_spread_ns", "speed_kmh", "doppler_hz", "timing_offset",
              "sro_ppm", "cfo_hz", "phase_deg", "phase_noise", "gain_change_db",
              "gain_change_at", "iq_gain_db", "iq_phase_deg", "dc_offset_db", "clip_db")

_LIGHT_SPEED = 299_792_458.0
_N_SINUSOIDS = 8           # per tap; enough for Rayleigh statistics and a Jakes spectrum
_ANGLES = 2 * np.pi * np.arange(_N_SINUSOIDS) / _N_SINUSOIDS
_SINC_HALF = 8             # fractional delays: windowed sinc over 2 * 8 - 1 lags
_BLOCK = 1 << 15           # samples filtered at a time (bounds the memory of long captures)

# TR 38.901 Table 7.7.2-1/2/3: (normalised delay, power dB) per tap.
_TDL_TABLES = {
    "tdl-a": [(0.0000, -13.4), (0.3819, 0.0), (0.4025, -2.2), (0.5868, -4.0), (0.4610, -6.0),
              (0.5375, -8.2), (0.6708, -9.9), (0.5750, -10.5), (0.7618, -7.5),
              (1.5375, -15.9), (1.8978, -6.6), (2.2242, -16.7), (2.1718, -12.4),
              (2.4942, -15.2), (2.5119, -10.8), (3.0582, -11.3), (4.0810, -12.7),
              (4.4579, -16.2), (4.5695, -18.3), (4.7966, -18.9), (5.0066, -16.6),
              (5.3043, -19.9), (9.6586, -29.7)],
    "tdl-b": [(0.0000, 0.0), (0.1072, -2.2), (0.2155, -4.0), (0.2095, -3.2), (0.2870, -9.8),
              (0.2986, -1.2), (0.3752, -3.4), (0.5055, -5.2), (0.3681, -7.6), (0.3697, -3.0),
              (0.5700, -8.9), (0.5283, -9.0), (1.1021, -4.8), (1.2756, -5.7), (1.5474, -7.5),
              (1.7842, -1.9), (2.0169, -7.6), (2.8294, -12.2), (3.0219, -9.8),
              (3.6187, -11.4), (4.1067, -14.9), (4.2790, -9.2), (4.7834, -11.3)],
    "tdl-c": [(0.0000, -4.4), (0.2099, -1.2), (0.2219, -3.5), (0.2329, -5.2), (0.2176, -2.5),
              (0.6366, 0.0), (0.6448, -2.2), (0.6560, -3.9), (0.6584, -7.4), (0.7935, -7.1),
              (0.8213, -10.7), (0.9336, -11.1), (1.2285, -5.1), (1.3083, -6.8),
              (2.1704, -8.7), (2.7105, -13.2), (4.2589, -13.9), (4.6003, -13.9),
              (5.4902, -15.8), (5.6077, -17.1), (6.3065, -16.0), (6.6374, -15.7),
              (7.0427, -21.6), (8.6523, -22.8)],
}



def _profile(taps) -> tuple[np.ndarray, np.ndarray]:
    """(normalised delays, power shares summing to 1) of a TDL table."""
    delay, power_db = np.array(taps).T
    power = 10 ** (power_db / 10)
    return delay, power / power.sum()


_TDL = {name: _profile(taps) for name, taps in _TDL_TABLES.items()}

# Allowed values of the numeric settings (inclusive); settings not named: any finite number.
_BOUNDS = {"phase_noise": (0.0, math.inf), "delay_spread_ns": (0.0, math.inf),
           "speed_kmh": (0.0, math.inf), "carrier_hz": (0.0, math.inf),
           "timing_offset": (-1.0, 1.0)}
_OPTIONAL = ("dc_offset_db", "clip_db")   # None is off
_ONE_OF = "one_of"


@dataclasses.dataclass(frozen=True)
class OneOf:
    """A setting drawn per example among listed values, each with equal chance (the
    ``{one_of: [...]}`` form): for settings whose values are regimes rather than a
    continuum, such as pedestrian and vehicular speeds."""

    values: tuple


@dataclasses.dataclass
class Impairments:
    """What happens to a waveform between transmitter and samples; every default is off.

    Each numeric field is a number, a ``[lo, hi]`` range drawn uniformly per example, or
    ``{"one_of": [v1, v2, ...]}`` (held as :class:`OneOf`), one of the values per example.

    Attributes:
        cfo_hz: carrier frequency offset (Hz).
        phase_deg: carrier phase offset (degrees).
        sro_ppm: sample-rate offset (parts per million): sample i reads the waveform at
            ``i * (1 + sro_ppm * 1e-6)``, so a positive offset compresses it in time.
        timing_offset: delay in samples, in [-1, 1]: sample i reads the waveform at
            ``i - timing_offset``.
        phase_noise: Wiener (random-walk) phase noise, its Lorentzian 3 dB linewidth (Hz).
        multipath: None (off) or one of :data:`MULTIPATH_PROFILES`.
        delay_spread_ns: rms delay spread the TDL's normalised delays are scaled by (ns).
        speed_kmh: receiver speed for the Doppler of the multipath taps (km/h).
        carrier_hz: carrier frequency for that Doppler (Hz).
        iq_gain_db: IQ gain imbalance, Q rail over I rail (dB).
        iq_phase_deg: IQ phase imbalance, the Q rail's skew from quadrature (degrees).
        dc_offset_db: DC offset relative to the rms of the received samples (dB); None: off.
        gain_change_db: a step in receiver gain (dB) at a random sample in the middle half
            of the example, ramped (in dB) over 0 to 1/8 of its length; 0: off.
        clip_db: ADC clipping: each rail clipped at this level above the rail's rms (dB);
            None: off.
    """

    cfo_hz: float | tuple | OneOf = 0.0
    phase_deg: float | tuple | OneOf = 0.0
    sro_ppm: float | tuple | OneOf = 0.0
    timing_offset: float | tuple | OneOf = 0.0
    phase_noise: float | tuple | OneOf = 0.0
    multipath: str | None = None
    delay_spread_ns: float | tuple | OneOf = 100.0   # TR 38.901 "nominal"
    speed_kmh: float | tuple | OneOf = 0.0
    carrier_hz: float | tuple | OneOf = 2.4e9
    iq_gain_db: float | tuple | OneOf = 0.0
    iq_phase_deg: float | tuple | OneOf = 0.0
    dc_offset_db: float | tuple | OneOf | None = None
    gain_change_db: float | tuple | OneOf = 0.0
    clip_db: float | tuple | OneOf | None = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name != "multipath":
                setattr(self, f.name, _setting(f.name, getattr(self, f.name)))
        if self.multipath is not None and self.multipath not in MULTIPATH_PROFILES:
            raise InputError(f"multipath: {self.multipath!r} is not one of None, "
                             f"{', '.join(MULTIPATH_PROFILES)}")

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "impairments") -> "Impairments":
        """Checked settings from a mapping (a recipe's ``impairments:``); ``where`` prefixes
        any error, which names the key and the problem."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise InputError(f"{where}: a mapping of impairment settings, got "
                             f"{type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in known:
                raise InputError(f"{where}: unknown impairment {key!r} (known: "
                                 f"{', '.join(known)})")
        try:
            return cls(**d)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        """The settings as plain JSON types, in the form :meth:`from_dict` reads back:
        ranges as lists, :class:`OneOf` as ``{"one_of": [...]}``."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(v):
    if isinstance(v, OneOf):
        return {_ONE_OF: list(v.values)}
    return list(v) if isinstance(v, tuple) else v


def _number(key: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{key}: expected a number, [lo, hi] or {{one_of: [...]}}, "
                         f"got {v!r}")
    v = float(v)
    lo, hi = _BOUNDS.get(key, (-math.inf, math.inf))
    if not (math.isfinite(v) and lo <= v <= hi):
        raise InputError(f"{key}: {v:g} is outside [{lo:g}, {hi:g}]" if math.isfinite(v)
                         else f"{key}: must be finite, got {v}")
    return v


def _one_of(key: str, v) -> OneOf:
    """A checked ``{one_of: [...]}`` mapping (or a :class:`OneOf` already made)."""
    values = v.values if isinstance(v, OneOf) else v.get(_ONE_OF)
    if not isinstance(v, OneOf) and set(v) != {_ONE_OF}:
        raise InputError(f"{key}: a choice is {{one_of: [v1, v2, ...]}} alone, got keys "
                         f"{', '.join(map(str, v)) or 'none'}")
    if not isinstance(values, (list, tuple)) or not values:
        raise InputError(f"{key}: one_of needs a non-empty list of values, got {values!r}")
    return OneOf(tuple(_number(key, x) for x in values))


def _setting(key: str, v):
    """A checked setting: a float, a (lo, hi) tuple, a :class:`OneOf`, or None where None
    means off."""
    if v is None and key in _OPTIONAL:
        return None
    if isinstance(v, (dict, OneOf)):
        return _one_of(key, v)
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise InputError(f"{key}: a range is [lo, hi], got {len(v)} values")
        lo, hi = _number(key, v[0]), _number(key, v[1])
        if lo > hi:
            raise InputError(f"{key}: range [{lo:g}, {hi:g}] is upside down (lo > hi)")
        return (lo, hi)
    return _number(key, v)


def _draw(rng: np.random.Generator, v):
    """One value of a setting: ranges and choices are drawn, numbers (and None) are as they
    are."""
    if isinstance(v, OneOf):
        return v.values[int(rng.integers(len(v.values)))]
    return float(rng.uniform(*v)) if isinstance(v, tuple) else v


# -- channel -------------------------------------------------------------------------------
#
# Multipath, timing offset and sample-rate offset are one time-varying FIR,
# y[i] = sum_m g_m[i] x[i - m]: path k arrives delay[k] + D(i) samples late with gain a_k(i),
# D(i) = timing_offset - sro * i the receiver clock's offset, and each path is put onto the
# integer lags m by a windowed sinc, so fractional delays stay band-limited. The taps are
# computed at a few points across the example (fine enough for the Doppler and for D to move
# at most 1/20 sample between two) and the output moves linearly between them.

_SINC_STEP = 1 / 256       # table resolution (samples); linear interpolation within 1e-5
_SINC_GRID = np.arange(-_SINC_HALF, _SINC_HALF + _SINC_STEP / 2, _SINC_STEP)
_SINC_TABLE = np.sinc(_SINC_GRID) * (0.5 + 0.5 * np.cos(np.pi * _SINC_GRID / _SINC_HALF))


def _sinc_window(d: np.ndarray) -> np.ndarray:
    """Hann-windowed sinc of ``d`` samples, zero beyond +-_SINC_HALF (from a table)."""
    return np.interp(d, _SINC_GRID, _SINC_TABLE, left=0.0, right=0.0)


def _fading(rng: np.random.Generator, n_taps: int, nu: float, points: int,
            step: float) -> np.ndarray:
    """Rayleigh fading of unit mean power per tap with a Jakes spectrum at normalised Doppler
    ``nu`` (cycles per sample), at ``points`` times ``step`` samples apart: ``(n_taps,
    points)``, or ``(n_taps, 1)`` when ``nu`` is 0 (static)."""
    if nu == 0:
        return (rng.standard_normal((n_taps, 2)) @ np.array([1, 1j]) / math.sqrt(2))[:, None]
    # Sum of sinusoids: arrival angles evenly spread with a random turn, random phases.
    u = rng.uniform(-np.pi, np.pi, (n_taps, _N_SINUSOIDS + 1))
    w = (2 * np.pi * nu * step) * np.cos(_ANGLES + u[:, :1] / _N_SINUSOIDS)  # rad per point
    turn = np.empty((n_taps, _N_SINUSOIDS, points), np.complex128)   # (tap, sinusoid, time)
    turn[:, :, 0] = np.exp(1j * u[:, 1:])
    turn[:, :, 1:] = np.exp(1j * w)[:, :, None]
    return np.cumprod(turn, axis=2).sum(axis=1) * (1 / math.sqrt(_N_SINUSOIDS))


def _between(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``n`` samples spanned by ``m`` evenly spread points: the point before each sample
    and the fraction of the way to the next (linear interpolation)."""
    pos = np.arange(n) * ((m - 1) / max(n - 1, 1))
    j = np.minimum(pos.astype(np.int64), max(m - 2, 0))
    return j, (pos - j).astype(np.float32)


def _taps_over_block(windows: np.ndarray, g: np.ndarray, j: np.ndarray, frac: np.ndarray):
    """One block of the time-varying FIR: ``windows`` ``(sample, lag)``, taps ``g`` ``(lag,
    point)``, each sample ``frac`` of the way from point ``j`` to ``j + 1``."""
    points = g.shape[1]
    if points == 1:
        return windows @ g[:, 0]
    if points > g.shape[0]:   # taps change faster than there are lags: per-sample taps
        return np.einsum("ik,ki->i", windows, g[:, j] * (1 - frac) + g[:, j + 1] * frac)
    # Slow change: filter with each point's taps, then move linearly between them.
    y = (windows @ g).ravel()                                        # (sample, point)
    at = np.arange(len(windows)) * points + j
    before = y.take(at)
    return before + (y.take(at + 1) - before) * frac


def _fir_channel(x, delay: np.ndarray, gain: np.ndarray, t: np.ndarray, clock: np.ndarray):
    """``x`` through paths of ``delay`` (samples) and complex ``gain`` ``(path, point)`` with
    the clock offset ``clock`` (samples, per point) at the points ``t`` (sample times)."""
    n = len(x)
    total = delay[None, :] + clock[:, None]                          # (point, path)
    first = math.floor(total.min()) - _SINC_HALF + 1
    last = math.ceil(total.max()) + _SINC_HALF - 1
    lags = np.arange(last, first - 1, -1)                            # the windows' order
    s = _sinc_window(lags[None, :, None] - total[:, None, :])        # (point, lag, path)
    if gain.shape[1] != len(t):                                      # static paths
        gain = gain.repeat(len(t), axis=1)
    g = np.einsum("plk,kp->lp", s, gain).astype(np.complex64)       # (lag, point)
    xp = np.zeros(n + len(lags) - 1, np.complex64)                   # xp[q] = x[q - last]
    lo, hi = max(last, 0), min(last + n, len(xp))
    if hi > lo:
        xp[lo:hi] = x[lo - last:hi - last]
    j, frac = _between(len(t), n)
    out = np.empty(n, np.complex64)
    for a in range(0, n, _BLOCK):   # row i of a block's windows: x[i - lags], lags descending
        b = min(a + _BLOCK, n)
        windows = np.lib.stride_tricks.as_strided(
            xp[a:], (b - a, len(lags)), (xp.strides[0], xp.strides[0])).copy()
        out[a:b] = _taps_over_block(windows, g, j[a:b], frac[a:b])
    return out


def _rotate(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``x * exp(1j * theta)``; the phase wrapped in float64 so float32 keeps its precision
    over long captures."""
    theta = np.mod(theta, 2 * np.pi).astype(np.float32)
    e = np.empty(len(x), np.complex64)
    e.real, e.imag = np.cos(theta), np.sin(theta)
    return x * e


def _paths(rng, samp_rate: float, imp: Impairments, used: dict):
    """Multipath: the paths' delays (samples), power gains and normalised Doppler; one
    direct path when multipath is off."""
    if imp.multipath is None:
        return np.zeros(1), np.ones(1), 0.0
    spread, speed = _draw(rng, imp.delay_spread_ns), _draw(rng, imp.speed_kmh)
    doppler = speed / 3.6 * _draw(rng, imp.carrier_hz) / _LIGHT_SPEED
    used.update(multipath=1 + MULTIPATH_PROFILES.index(imp.multipath),
                delay_spread_ns=spread, speed_kmh=speed, doppler_hz=doppler)
    delay, power = _TDL[imp.multipath]
    return delay * spread * 1e-9 * samp_rate, power, doppler / samp_rate


def apply_channel(x: np.ndarray, rng: np.random.Generator, samp_rate: float,
                  imp: Impairments) -> tuple[np.ndarray, dict]:
    """The transmission path: multipath, timing and sample-rate offset, carrier frequency
    and phase offset, phase noise. Settings that are off leave ``x`` as it is (bit for bit)
    and draw nothing from ``rng``; samples read from outside ``x`` are zeros.

    Args:
        x: complex samples.
        rng: random generator for the draws.
        samp_rate: sample rate (Hz).
        imp: the settings.

    Returns:
        ``(samples complex64, used)``, ``used`` holding the channel's :data:`PARAM_KEYS`.
    """
    n = len(x)
    used = {"multipath": 0, "delay_spread_ns": math.nan, "speed_kmh": math.nan,
            "doppler_hz": math.nan}
    delay, power, nu = _paths(rng, samp_rate, imp, used)
    tau, sro = _draw(rng, imp.timing_offset), _draw(rng, imp.sro_ppm)
    if imp.multipath is not None or tau or sro:
        points = 1                      # static taps: one FIR
        if nu or sro:                   # 1/16 Doppler cycle, 1/20 sample of drift apart
            points = max(1, min(n, max(math.ceil(16 * abs(nu) * n),
                                       math.ceil(20 * abs(sro) * 1e-6 * n), 1) + 1))
        step = (n - 1) / (points - 1) if points > 1 else 0.0
        t = np.arange(points) * step
        gain = np.sqrt(power)[:, None] * (_fading(rng, len(delay), nu, len(t), step)
                                          if imp.multipath is not None else 1.0)
        x = _fir_channel(x, delay, gain, t, tau - sro * 1e-6 * t)
    cfo, phase = _draw(rng, imp.cfo_hz), _draw(rng, imp.phase_deg)
    linewidth = _draw(rng, imp.phase_noise)
    if cfo or phase or linewidth:
        theta = np.arange(n) * (2 * math.pi * cfo / samp_rate) + math.radians(phase)
        if linewidth:   # Wiener phase noise: increments of variance 2 pi linewidth / rate
            theta += np.cumsum(rng.standard_normal(n) * math.sqrt(
                2 * math.pi * linewidth / samp_rate))
        x = _rotate(x, theta)
    used.update(timing_offset=tau, sro_ppm=sro, cfo_hz=cfo, phase_deg=phase,
                phase_noise=linewidth)
    return np.asarray(x, np.complex64), used


# -- noise ---------------------------------------------------------------------------------

def _power(x: np.ndarray) -> float:
    """Mean power of ``x`` (0 when empty)."""
    return float(np.vdot(x, x).real) / len(x) if len(x) else 0.0


def add_awgn(x: np.ndarray, snr_db: float, bandwidth: float, samp_rate: float,
             rng: np.random.Generator, active: np.ndarray | None = None,
             signal_share: float = 1.0) -> np.ndarray:
    """``x`` plus complex white Gaussian noise at an in-band SNR.

    Args:
        x: complex samples.
        snr_db: in-band SNR (dB): signal power over the noise power inside ``bandwidth``.
        bandwidth: the signal's occupied bandwidth (Hz), clamped to ``samp_rate``.
        samp_rate: sample rate (Hz); the noise is white over all of it.
        rng: random generator for the noise.
        active: bool mask of the samples where the signal transmits; None: all of them.
        signal_share: the fraction of ``x``'s power that is the signal the SNR refers to
            (the primary of an anomaly example; the rest is interference).

    Returns:
        complex64 samples. A silent ``x`` gets noise as if its signal had unit power.
    """
    if not bandwidth > 0:
        raise InputError(f"add_awgn: bandwidth must be positive, got {bandwidth!r} Hz")
    ps = _power(x if active is None else x[active]) * signal_share
    ps = ps if ps > 0 else 1.0
    noise_power = ps * samp_rate / (min(bandwidth, samp_rate) * 10 ** (snr_db / 10))
    w = rng.standard_normal(2 * len(x), dtype=np.float32).view(np.complex64)
    return (x + w * np.float32(math.sqrt(noise_power / 2))).astype(np.complex64)


# -- receiver ------------------------------------------------------------------------------

def _gain_step(rng, n: int, step_db: float) -> tuple[np.ndarray, int]:
    """Gain (linear, ``(n,)``) stepping by ``step_db`` at a random sample in the middle half,
    ramped (in dB) over 0 to n/8 samples; returns (gain, where the step starts)."""
    at = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4)))
    ramp = int(rng.integers(0, n // 8 + 1))
    db = np.clip((np.arange(n) - at + 1) / (ramp + 1), 0, 1) * step_db
    return (10 ** (db / 20)).astype(np.float32), at


def _rms(x: np.ndarray) -> float:
    return math.sqrt(_power(x))


def apply_receiver(x: np.ndarray, rng: np.random.Generator,
                   imp: Impairments) -> tuple[np.ndarray, dict]:
    """The receiver: gain change, IQ imbalance, DC offset, ADC clipping, in that order.
    Settings that are off leave ``x`` as it is (bit for bit) and draw nothing.

    IQ imbalance keeps the I rail and makes Q ``g * (Q cos(phi) - I sin(phi))``, ``g`` the
    gain and ``phi`` the phase imbalance: an image at the mirrored frequency.

    Returns:
        ``(samples complex64, used)``, ``used`` holding the receiver's :data:`PARAM_KEYS`.
    """
    x = np.asarray(x, np.complex64)
    used = {"gain_change_db": 0.0, "gain_change_at": math.nan}
    step = _draw(rng, imp.gain_change_db)
    if step and len(x):
        gain, at = _gain_step(rng, len(x), step)
        x = x * gain
        used.update(gain_change_db=step, gain_change_at=at)
    g_db, phi = _draw(rng, imp.iq_gain_db), _draw(rng, imp.iq_phase_deg)
    if g_db or phi:
        g, p = 10 ** (g_db / 20), math.radians(phi)
        q = g * (x.imag * math.cos(p) - x.real * math.sin(p))
        x = (x.real + 1j * q).astype(np.complex64)
    dc = _draw(rng, imp.dc_offset_db)
    if dc is not None:
        level = _rms(x) * 10 ** (dc / 20)
        x = x + np.complex64(level * np.exp(2j * np.pi * rng.random()))
    clip = _draw(rng, imp.clip_db)
    if clip is not None:
        a = np.float32(_rms(x) / math.sqrt(2) * 10 ** (clip / 20))   # per-rail rms * level
        x = (np.clip(x.real, -a, a) + 1j * np.clip(x.imag, -a, a)).astype(np.complex64)
    used.update(iq_gain_db=g_db, iq_phase_deg=phi,
                dc_offset_db=math.nan if dc is None else dc,
                clip_db=math.nan if clip is None else clip)
    return x, used


def impair(sig: Signal, rng: np.random.Generator, samp_rate: float, imp: Impairments,
           snr_db: float | None) -> tuple[np.ndarray, dict]:
    """``sig`` through the channel, noise at ``snr_db`` in-band SNR over ``sig.bandwidth``
    (none if None) and the receiver.

    A ``signal_share`` in ``sig.params`` (anomaly examples) says which part of the power the
    SNR refers to; see :func:`add_awgn`.

    Returns:
        ``(samples complex64 (n,), used)``, ``used`` holding every key of :data:`PARAM_KEYS`.
    """
    x, used = apply_channel(sig.iq, rng, samp_rate, imp)
    if snr_db is not None:
        x = add_awgn(x, snr_db, sig.bandwidth, samp_rate, rng, sig.active,
                     signal_share=sig.params.get("signal_share", 1.0))
    x, rx = apply_receiver(x, rng, imp)
    used.update(rx)
    return x, {k: used[k] for k in PARAM_KEYS}
