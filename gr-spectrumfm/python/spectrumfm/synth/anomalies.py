"""Anomaly examples after the paper's over-the-air case: a primary QPSK user and what can
disturb it.

The paper's testbed transmits a QPSK primary user 20 MHz wide at 2.9 GHz and adds QPSK
"aliased signals" 10 or 30 MHz wide that fold into the 2.885-2.915 GHz capture. Here:

* ``normal``: the primary alone: QPSK, 16 Msym/s, RRC roll-off 0.25, so 20 MHz occupied,
  centred in the capture;
* ``alias-10mhz``: plus a 10 MHz QPSK interferer (8 Msym/s) centred within +-10 MHz of the
  primary (at least half of it inside the primary's band);
* ``alias-30mhz``: plus a 30 MHz QPSK interferer (24 Msym/s) placed so that 3 MHz or more
  of it lies beyond the capture's Nyquist edge and folds back in, while 5 MHz or more
  overlaps the primary directly; refused above 64 MS/s, where no placement does both;
* ``cw-jammer``: plus an unmodulated tone inside the primary's band;
* ``chirp-jammer``: plus a tone swept linearly (sawtooth) over 5-20 MHz of the band,
  every 5-50 us;
* ``pulsed``: plus bursts of noise filling the primary's band, a pulse every 4-20 us,
  on for 10-50 % of it;
* ``spoof``: the primary replaced by an imitation with the right modulation, band and power
  but the wrong timing: its symbol rate is off by 2-5 % (either way). A receiver locked to
  the true symbol clock sees its symbols drift; the band edges move by the same fraction.

Interferers are the band-limited waveforms evaluated directly at the capture's sample
instants, with no anti-alias filter: whatever of them lies beyond +-samp_rate/2 folds into
the capture, exactly as if they were generated at a higher rate and decimated without
filtering. ``isr_db`` is the interferer's mean power over the primary's (over its pulses for
``pulsed``), drawn from -10 to +10 dB unless given.

Levels: the primary has unit mean power and interference comes on top, so an SNR set over
:attr:`Signal.bandwidth` (the primary's band) is the primary's in-band SNR; ``signal_share``
in the parameters (primary power over total power) tells :func:`~spectrumfm.synth.
impairments.add_awgn` so.
"""

from __future__ import annotations

import math

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.synth.core import Signal, draw, freq_shift
from spectrumfm.synth.modulations import CONSTELLATIONS

__all__ = ["ANOMALY_CLASSES", "ANOMALY_MIN_RATE", "ALIAS_30MHZ_MAX_RATE", "PRIMARY_BANDWIDTH",
           "PRIMARY_ROLLOFF", "PRIMARY_SYMBOL_RATE", "anomaly_example"]

#: Class ids, ``normal`` first (label 0).
ANOMALY_CLASSES = ["normal", "alias-10mhz", "alias-30mhz", "cw-jammer", "chirp-jammer",
                   "pulsed", "spoof"]
PRIMARY_ROLLOFF = 0.25
PRIMARY_SYMBOL_RATE = 16e6                                        # symbols/s
#: The primary's occupied bandwidth (Hz).
PRIMARY_BANDWIDTH = PRIMARY_SYMBOL_RATE * (1 + PRIMARY_ROLLOFF)   # 20 MHz
#: The lowest sample rate (Hz) that holds the primary's band.
ANOMALY_MIN_RATE = PRIMARY_BANDWIDTH
#: The highest sample rate (Hz) for ``alias-30mhz``: above it a 30 MHz interferer cannot both
#: fold into the capture and overlap the primary.
ALIAS_30MHZ_MAX_RATE = 64e6
_ISR_RANGE = (-10.0, 10.0)   # dB
_SPAN = 12                   # RRC pulse length, symbols

# Parameters each class takes (all drawn when not given).
_PARAMS = {"normal": (), "alias-10mhz": ("isr_db", "interferer_hz"),
           "alias-30mhz": ("isr_db", "interferer_hz"), "cw-jammer": ("isr_db", "interferer_hz"),
           "chirp-jammer": ("isr_db", "interferer_hz", "sweep_hz", "period_s"),
           "pulsed": ("isr_db", "period_s", "duty"), "spoof": ("rate_error_pct",)}


def _rrc_pulse(t: np.ndarray, beta: float) -> np.ndarray:
    """Root-raised-cosine pulse at ``t`` symbol periods (peak ``1 - beta + 4 beta / pi``)."""
    t = np.where(np.abs(t) < 1e-9, 1e-9, t)                  # the removable singularity
    edge = np.abs(np.abs(4 * beta * t) - 1) < 1e-7           # and the other two
    t = np.where(edge, t * (1 + 1e-6), t)
    num = np.sin(np.pi * t * (1 - beta)) + 4 * beta * t * np.cos(np.pi * t * (1 + beta))
    return num / (np.pi * t * (1 - (4 * beta * t) ** 2))


# The pulse tabulated every 1/512 symbol over its span (linear interpolation is within 1e-5).
_PULSE_STEPS = 512
_PULSE_TABLE = _rrc_pulse(np.arange(-_SPAN // 2 * _PULSE_STEPS, _SPAN // 2 * _PULSE_STEPS + 1)
                          / _PULSE_STEPS, PRIMARY_ROLLOFF)


def _pulse(d: np.ndarray) -> np.ndarray:
    """The tabulated pulse at ``d`` symbol periods, ``-SPAN/2 <= d < SPAN/2``."""
    u = (d + _SPAN // 2) * _PULSE_STEPS
    i = u.astype(np.int64)
    lo = _PULSE_TABLE[i]
    return lo + (_PULSE_TABLE[i + 1] - lo) * (u - i)


def _qpsk(rng, samp_rate: float, n: int, symbol_rate: float, center_hz: float = 0.0):
    """``n`` samples of RRC-shaped QPSK (roll-off 0.25) at ``symbol_rate``, centred at
    ``center_hz``, the continuous waveform read at ``i / samp_rate`` (so whatever lies beyond
    +-samp_rate/2 aliases); unit mean power, random symbol timing and carrier phase."""
    t = rng.random() + np.arange(n) * (symbol_rate / samp_rate)   # time in symbols
    k = np.floor(t).astype(np.int64)
    near = np.arange(-_SPAN // 2 + 1, _SPAN // 2 + 1)             # symbols around each t
    pts = CONSTELLATIONS["qpsk"]
    symbols = pts[rng.integers(len(pts), size=int(k[-1]) + _SPAN)]  # symbol s at s + SPAN/2 - 1
    pulse = _pulse(t[:, None] - (k[:, None] + near))                 # (sample, symbol)
    x = np.einsum("ij,ij->i", symbols[k[:, None] + near + _SPAN // 2 - 1], pulse)
    x = freq_shift(x, center_hz, samp_rate, phase=2 * np.pi * rng.random())
    return x / np.float32(math.sqrt(np.vdot(x, x).real / n))


def _band_noise(rng, samp_rate: float, n: int) -> np.ndarray:
    """Complex Gaussian noise filling the primary's band (FFT mask), unit mean power."""
    spec = np.fft.fft(rng.standard_normal(n) + 1j * rng.standard_normal(n))
    spec[np.abs(np.fft.fftfreq(n, 1 / samp_rate)) > PRIMARY_BANDWIDTH / 2] = 0
    x = np.fft.ifft(spec)
    return x / math.sqrt(max(np.vdot(x, x).real / n, 1e-30))


# -- the interferers: (samples at unit power, parameters used) -----------------------------

def _alias(width: float, fold: bool):
    def make(rng, samp_rate, n, interferer_hz=None):
        if interferer_hz is None:
            if fold:   # 3 MHz or more beyond Nyquist, 5 MHz or more over the primary
                lo = max(0.0, samp_rate / 2 + 3e6 - width / 2)
                hi = PRIMARY_BANDWIDTH / 2 - 5e6 + width / 2
            else:      # centred anywhere over the primary's band
                lo, hi = 0.0, PRIMARY_BANDWIDTH / 2
            interferer_hz = rng.uniform(lo, hi) * rng.choice((-1, 1))
        x = _qpsk(rng, samp_rate, n, width / (1 + PRIMARY_ROLLOFF), float(interferer_hz))
        return x, {"interferer_hz": float(interferer_hz), "interferer_bw_hz": width}
    return make


def _cw(rng, samp_rate, n, interferer_hz=None):
    edge = 0.45 * PRIMARY_BANDWIDTH
    f = float(draw(rng, interferer_hz, low=-edge, high=edge))
    phase = 2 * np.pi * (f / samp_rate * np.arange(n) + rng.random())
    return np.exp(1j * phase), {"interferer_hz": f}


def _chirp(rng, samp_rate, n, interferer_hz=None, sweep_hz=None, period_s=None):
    span = float(draw(rng, sweep_hz, low=5e6, high=20e6))
    room = max(0.0, (PRIMARY_BANDWIDTH - span) / 2)
    f0 = float(draw(rng, interferer_hz, low=-room, high=room))
    period = float(draw(rng, period_s, low=5e-6, high=50e-6))
    _positive("chirp-jammer", sweep_hz=span, period_s=period)
    cycles = (np.arange(n) / samp_rate / period + rng.random()) % 1.0   # sawtooth 0..1
    freq = f0 + span * (cycles - 0.5)
    phase = 2 * np.pi * np.cumsum(freq) / samp_rate
    return np.exp(1j * phase), {"interferer_hz": f0, "sweep_hz": span, "period_s": period}


def _pulsed(rng, samp_rate, n, period_s=None, duty=None):
    period = float(draw(rng, period_s, low=4e-6, high=20e-6))
    duty = float(draw(rng, duty, low=0.1, high=0.5))
    _positive("pulsed", period_s=period, duty=duty)
    if duty > 1:
        raise InputError(f"pulsed: duty is the fraction of each period a pulse is on, in "
                         f"(0, 1]; got {duty:g}")
    on = (np.arange(n) / samp_rate / period + rng.random()) % 1.0 < duty
    x = _band_noise(rng, samp_rate, n) * on
    p = np.vdot(x[on], x[on]).real / max(on.sum(), 1)
    return x / math.sqrt(max(p, 1e-30)), {"period_s": period, "duty": duty}


_INTERFERERS = {"alias-10mhz": _alias(10e6, False), "alias-30mhz": _alias(30e6, True),
                "cw-jammer": _cw,
                "chirp-jammer": _chirp, "pulsed": _pulsed}


def _positive(cls: str, **values) -> None:
    for key, v in values.items():
        if not v > 0:
            raise InputError(f"{cls}: {key} must be positive, got {v:g}")


def _check(samp_rate: float, n: int, cls: str, params: dict) -> None:
    if cls not in _PARAMS:
        raise InputError(f"unknown anomaly class {cls!r} (one of "
                         f"{', '.join(ANOMALY_CLASSES)})")
    if n < 1:
        raise InputError(f"{cls}: n must be at least 1 sample, got {n}")
    if not samp_rate >= ANOMALY_MIN_RATE:
        raise InputError(f"{cls}: sample rate {samp_rate / 1e6:g} MS/s is too low for the "
                         f"20 MHz primary; use at least {ANOMALY_MIN_RATE / 1e6:g} MS/s")
    if cls == "alias-30mhz" and samp_rate > ALIAS_30MHZ_MAX_RATE:
        raise InputError(f"alias-30mhz: at {samp_rate / 1e6:g} MS/s a 30 MHz interferer "
                         f"cannot fold into the capture and overlap the primary; use at most "
                         f"{ALIAS_30MHZ_MAX_RATE / 1e6:g} MS/s")
    unknown = sorted(set(params) - set(_PARAMS[cls]))
    if unknown:
        raise InputError(f"{cls}: unknown parameter {unknown[0]!r} (takes: "
                         f"{', '.join(_PARAMS[cls]) or 'none'})")
    for key, v in params.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not math.isfinite(v)):
            raise InputError(f"{cls}: {key} must be a finite number, got {v!r}")


def anomaly_example(rng: np.random.Generator, samp_rate: float, n: int, cls: str,
                    **params) -> Signal:
    """One example of anomaly class ``cls``.

    Args:
        rng: random generator for every draw.
        samp_rate: sample rate (Hz), at least :data:`ANOMALY_MIN_RATE`.
        n: number of samples.
        cls: one of :data:`ANOMALY_CLASSES`.
        **params: the class's parameters (see ``_PARAMS``): ``isr_db`` (dB),
            ``interferer_hz`` (interferer, tone or sweep centre, Hz from the capture's
            centre), ``sweep_hz`` (chirp span, Hz), ``period_s`` (chirp sweep or pulse
            repetition period, s), ``duty`` (pulse on-fraction), ``rate_error_pct`` (spoof's
            symbol-rate error, %); drawn when not given.

    Returns:
        A :class:`Signal` whose primary (or spoof) has unit mean power, interference on top;
        ``bandwidth`` is that QPSK signal's occupied bandwidth (Hz); ``params`` holds the
        values used and ``signal_share`` (primary power over total power).
    """
    samp_rate = float(samp_rate)
    _check(samp_rate, n, cls, params)
    if cls == "spoof":
        err = params.get("rate_error_pct")
        err = float(err if err is not None else rng.uniform(2, 5) * rng.choice((-1, 1)))
        if not -50 < err < 50:
            raise InputError(f"spoof: rate_error_pct must be within +-50 %, got {err:g}")
        x = _qpsk(rng, samp_rate, n, PRIMARY_SYMBOL_RATE * (1 + err / 100))
        return Signal(x.astype(np.complex64), PRIMARY_BANDWIDTH * (1 + err / 100), None,
                      {"rate_error_pct": err, "signal_share": 1.0})
    x = _qpsk(rng, samp_rate, n, PRIMARY_SYMBOL_RATE)
    if cls == "normal":
        return Signal(x.astype(np.complex64), PRIMARY_BANDWIDTH, None, {"signal_share": 1.0})
    isr = float(draw(rng, params.pop("isr_db", None), low=_ISR_RANGE[0], high=_ISR_RANGE[1]))
    interference, used = _INTERFERERS[cls](rng, samp_rate, n, **params)
    x = x + interference * math.sqrt(10 ** (isr / 10))
    share = 1.0 / max(np.vdot(x, x).real / n, 1e-30)    # the primary has unit power
    return Signal(x.astype(np.complex64), PRIMARY_BANDWIDTH, None,
                  {"isr_db": isr, **used, "signal_share": share})
