"""The RadioML 2018 modulation set: 24 ids, digital ones pulse-shaped, analog ones carrying a
band-limited random "audio" message.

Rates are nominal: a digital waveform is made at an integer number of samples per symbol
``sps`` (drawn from 2 to 16 unless given), so the sample rate only sets its symbol rate
``samp_rate / sps``; an analog message's bandwidth is drawn as a fraction of the rate.

Digital (root-raised-cosine pulses, roll-off drawn from 0.20 to 0.50 in steps of 0.05 unless
given; occupied bandwidth ``symbol_rate * (1 + rolloff)``):

* ``ook``: on-off keying, levels {0, sqrt(2)}; ``4ask``/``8ask``: bipolar amplitude levels
  (-M+1 ... M-1) on the real axis;
* ``bpsk`` ... ``32psk``: M points on the unit circle (QPSK at odd multiples of 45 degrees);
* ``16apsk`` (4+12 points, ring ratio 2.85) and ``32apsk`` (4+12+16, ratios 2.84, 5.27) as in
  DVB-S2 at code rate 3/4; ``64apsk`` (8+16+20+20, ratios 2.2, 3.6, 5.2) and ``128apsk``
  (16+16+16+16+16+48, radii 1, 1.715, 2.118, 2.681, 2.75, 3.25) after DVB-S2X's ring
  structure, with evenly spaced points: each ring turned half its point spacing off the
  real axis (DVB-S2X places some 128APSK points irregularly);
* ``16qam``, ``64qam``, ``256qam`` square; ``32qam`` and ``128qam`` cross (the square grid
  one size up without its corners);
* ``gmsk``: Gaussian MSK, BT 0.3, modulation index 0.5, 99 % bandwidth ``0.92 * symbol_rate``;
* ``oqpsk``: QPSK with the quadrature rail delayed half a symbol (even ``sps`` only).

Every constellation has unit mean energy; every waveform is returned at unit mean power.

Analog (message bandwidth ``msg_bw`` drawn from 1 % to 5 % of the rate unless given; the
message is noise shaped flat over 5-100 % of ``msg_bw`` plus one to three tones, peak 1):

* ``am-dsb-wc``: ``1 + mod_index * m`` (depth 0.3-0.9), ``am-dsb-sc``: ``m``; 2 * msg_bw wide;
* ``am-ssb-wc``/``am-ssb-sc``: the analytic message (upper or lower sideband, ``sideband``
  +1/-1), with or without carrier; msg_bw wide;
* ``fm``: deviation ``mod_index * msg_bw`` (index 0.5-4), Carson bandwidth
  ``2 * (deviation + msg_bw)``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.signal

from spectrumfm.errors import InputError
from spectrumfm.synth.core import Signal, draw, gaussian_taps, register, rrc_taps, unit_power

__all__ = ["MODULATIONS", "CONSTELLATIONS", "shaped_symbols"]

#: The modulation ids in RadioML 2018 order (a dataset's label order).
MODULATIONS = ["ook", "4ask", "8ask", "bpsk", "qpsk", "8psk", "16psk", "32psk", "16apsk",
               "32apsk", "64apsk", "128apsk", "16qam", "32qam", "64qam", "128qam", "256qam",
               "am-ssb-wc", "am-ssb-sc", "am-dsb-wc", "am-dsb-sc", "fm", "gmsk", "oqpsk"]

# Roll-offs on a 0.05 grid and sps 2..16 make 105 (rolloff, sps) pairs: all stay in
# rrc_taps' cache, so no draw pays for designing taps.
_ROLLOFFS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
_SPS_RANGE = (2, 16)
_GMSK_BT = 0.3
_GMSK_OBW = 0.92          # 99 % power bandwidth of GMSK BT 0.3, in symbol rates
_MSG_BW = (0.01, 0.05)    # analog message bandwidth, fraction of the sample rate
_AM_DEPTH = (0.3, 0.9)
_FM_INDEX = (0.5, 4.0)


# -- constellations ------------------------------------------------------------------------

def _unit_energy(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.complex128)
    return (p / math.sqrt(np.mean(np.abs(p) ** 2))).astype(np.complex64)


def _ask(m: int) -> np.ndarray:
    return _unit_energy(np.arange(-(m - 1), m, 2))


def _psk(m: int, offset: float = 0.0) -> np.ndarray:
    return _unit_energy(np.exp(1j * (2 * np.pi * np.arange(m) / m + offset)))


def _qam(m: int) -> np.ndarray:
    """Square QAM for even log2(m); cross QAM (a square one size up, corners cut) for odd."""
    bits = int(math.log2(m))
    side = 2 ** (bits // 2) if bits % 2 == 0 else 6 * 2 ** ((bits - 5) // 2)
    levels = np.arange(-(side - 1), side, 2)
    i, q = np.meshgrid(levels, levels)
    pts = (i + 1j * q).ravel()
    if bits % 2:
        corner = side - 2 * (side // 6)   # |level| above this on both rails is a cut corner
        pts = pts[(np.abs(pts.real) < corner) | (np.abs(pts.imag) < corner)]
    return _unit_energy(pts)


def _apsk(counts, radii) -> np.ndarray:
    """Rings of ``counts`` points at ``radii``, each half a spacing (pi/M) off the real axis
    as in DVB-S2; a ring with as many points as the one inside it turns half a spacing
    further, so close rings do not line up."""
    rings, offset, prev = [], 0.0, 0
    for m, r in zip(counts, radii):
        offset = offset + math.pi / m if m == prev else math.pi / m
        rings.append(r * np.exp(1j * (2 * np.pi * np.arange(m) / m + offset)))
        prev = m
    return _unit_energy(np.concatenate(rings))


#: Symbol alphabets of the linear modulations, unit mean energy (complex64).
CONSTELLATIONS = {
    "ook": _unit_energy([0, 1]),
    "4ask": _ask(4), "8ask": _ask(8),
    "bpsk": _psk(2), "qpsk": _psk(4, math.pi / 4), "8psk": _psk(8), "16psk": _psk(16),
    "32psk": _psk(32),
    "16apsk": _apsk((4, 12), (1, 2.85)),
    "32apsk": _apsk((4, 12, 16), (1, 2.84, 5.27)),
    "64apsk": _apsk((8, 16, 20, 20), (1, 2.2, 3.6, 5.2)),
    "128apsk": _apsk((16, 16, 16, 16, 16, 48), (1, 1.715, 2.118, 2.681, 2.75, 3.25)),
    "16qam": _qam(16), "32qam": _qam(32), "64qam": _qam(64), "128qam": _qam(128),
    "256qam": _qam(256),
}
for _points in CONSTELLATIONS.values():
    _points.flags.writeable = False


# -- digital -------------------------------------------------------------------------------

def _real(name: str, key: str, value) -> float:
    """A user-supplied parameter as a float; InputError unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise InputError(f"{name}: {key} must be a number, got {value!r}")
    return float(value)


def _sps(name: str, rng, sps, even: bool = False) -> int:
    low, high = _SPS_RANGE
    sps = _real(name, "sps", draw(rng, sps, range(low, high + 1, 2) if even else None,
                                  low=low, high=high, integer=True))
    if not sps.is_integer() or sps < 2:
        raise InputError(f"{name}: sps must be an integer of at least 2 samples per symbol, "
                         f"got {sps:g}")
    if even and sps % 2:
        raise InputError(f"{name}: sps must be even (the quadrature rail is delayed half a "
                         f"symbol), got {sps:g}")
    return int(sps)


def _rolloff(name: str, rng, rolloff) -> float:
    rolloff = _real(name, "rolloff", draw(rng, rolloff, _ROLLOFFS))
    if not 0 < rolloff <= 1:
        raise InputError(f"{name}: rolloff must be in (0, 1], got {rolloff:g}")
    return rolloff


def _n_symbols(n: int, sps: int, taps: np.ndarray) -> int:
    """Symbols that cover the filter's start-up transient, ``n`` samples and a symbol more."""
    return -(-(n + len(taps)) // sps) + 1


def _start(rng, sps: int, taps: np.ndarray) -> int:
    """First output sample: past the start-up transient, at a random point of a symbol."""
    return len(taps) - 1 + int(rng.integers(sps))


def _bits(rng, shape) -> np.ndarray:
    return (2 * rng.integers(2, size=shape) - 1).astype(np.float32)


def _digital_params(samp_rate: float, sps: int, **extra) -> dict:
    return {"sps": sps, **extra, "symbol_rate_hz": samp_rate / sps}


def shaped_symbols(rng: np.random.Generator, constellation: np.ndarray, n: int, sps: int,
                   rolloff: float) -> np.ndarray:
    """``n`` samples of random symbols from ``constellation`` through an RRC pulse.

    Args:
        rng: random generator (symbols and symbol timing).
        constellation: the symbol alphabet (complex).
        n: number of samples.
        sps: samples per symbol (integer).
        rolloff: RRC roll-off factor in (0, 1].

    Returns:
        complex64 ``(n,)`` at unit mean power, the first sample at a random symbol phase.
    """
    pts = np.asarray(constellation, dtype=np.complex64)
    taps = rrc_taps(rolloff, sps)
    symbols = pts[rng.integers(len(pts), size=_n_symbols(n, sps, taps))]
    start = _start(rng, sps, taps)
    return unit_power(scipy.signal.upfirdn(taps, symbols, up=sps)[start:start + n])


def _linear(name: str):
    pts = CONSTELLATIONS[name]

    def generate(rng, samp_rate, n, sps=None, rolloff=None) -> Signal:
        sps, rolloff = _sps(name, rng, sps), _rolloff(name, rng, rolloff)
        iq = shaped_symbols(rng, pts, n, sps, rolloff)
        return Signal(iq, samp_rate / sps * (1 + rolloff), None,
                      _digital_params(samp_rate, sps, rolloff=rolloff))
    generate.__name__ = f"_{name}"
    return generate


def _oqpsk(rng, samp_rate, n, sps=None, rolloff=None) -> Signal:
    sps, rolloff = _sps("oqpsk", rng, sps, even=True), _rolloff("oqpsk", rng, rolloff)
    taps = rrc_taps(rolloff, sps)
    rails = _bits(rng, (2, _n_symbols(n, sps, taps)))    # (I/Q, symbol)
    start = _start(rng, sps, taps)
    y = scipy.signal.upfirdn(taps, rails, up=sps, axis=1)
    late = start - sps // 2                                # Q half a symbol behind I
    iq = y[0, start:start + n] + 1j * y[1, late:late + n]
    return Signal(unit_power(iq), samp_rate / sps * (1 + rolloff), None,
                  _digital_params(samp_rate, sps, rolloff=rolloff))


@functools.lru_cache(maxsize=32)
def _gmsk_pulse(sps: int) -> np.ndarray:
    # The frequency pulse: one symbol's NRZ rectangle through the Gaussian, so a run of equal
    # bits holds the frequency at +-1 (full deviation).
    g = np.convolve(np.ones(sps, np.float32), gaussian_taps(_GMSK_BT, sps))
    g.flags.writeable = False
    return g


def _gmsk(rng, samp_rate, n, sps=None) -> Signal:
    sps = _sps("gmsk", rng, sps)
    pulse = _gmsk_pulse(sps)
    bits = _bits(rng, _n_symbols(n, sps, pulse))
    start = _start(rng, sps, pulse)
    freq = scipy.signal.upfirdn(pulse, bits, up=sps)[start:start + n]
    # modulation index 1/2: full deviation turns the phase by pi/2 per symbol
    phase = np.cumsum(freq, dtype=np.float64) * (math.pi / 2 / sps)
    return Signal(np.exp(1j * phase).astype(np.complex64), _GMSK_OBW * samp_rate / sps, None,
                  _digital_params(samp_rate, sps, bt=_GMSK_BT))


# -- analog --------------------------------------------------------------------------------

def _message(rng, samp_rate: float, n: int, msg_bw: float) -> np.ndarray:
    """The analytic signal of a random message band-limited to ``msg_bw`` Hz (noise flat
    over 5-100 % of the band plus 1-3 tones of equal total power), real part at peak 1."""
    nfft = max(2048, 1 << (2 * n - 1).bit_length())   # longer than n: not periodic in n
    hi = max(2, int(msg_bw / samp_rate * nfft))
    lo = max(1, hi // 20)
    k = hi - lo + 1
    spec = np.zeros(nfft, np.complex128)
    spec[lo:hi + 1] = rng.standard_normal(k) + 1j * rng.standard_normal(k)
    tones = rng.integers(lo, hi + 1, size=int(rng.integers(1, 4)))
    spec[tones] += math.sqrt(2 * k / len(tones)) * np.exp(2j * np.pi * rng.random(len(tones)))
    z = np.fft.ifft(spec)[:n]      # positive frequencies only: real part + j Hilbert
    return z / max(float(np.max(np.abs(z.real))), 1e-30)


def _msg_bw(name: str, rng, samp_rate: float, msg_bw) -> float:
    msg_bw = _real(name, "msg_bw", draw(rng, msg_bw, low=_MSG_BW[0] * samp_rate,
                                        high=_MSG_BW[1] * samp_rate))
    if not 0 < msg_bw <= samp_rate / 2:
        raise InputError(f"{name}: msg_bw must be in (0, samp_rate/2] Hz, got {msg_bw:g}")
    return msg_bw


def _am(name: str, rng, samp_rate: float, n: int, msg_bw, sideband=None, mod_index=None,
        *, single: bool, carrier: bool) -> Signal:
    w = _msg_bw(name, rng, samp_rate, msg_bw)
    params = {"msg_bw_hz": w}
    if single:
        params["sideband"] = draw(rng, sideband, (1, -1))
        if params["sideband"] not in (1, -1):
            raise InputError(f"{name}: sideband must be 1 (upper) or -1 (lower), got "
                             f"{sideband!r}")
    z = _message(rng, samp_rate, n, w)
    m = (z if params["sideband"] > 0 else np.conj(z)) if single else z.real
    if carrier:
        params["mod_index"] = _real(name, "mod_index", draw(rng, mod_index, low=_AM_DEPTH[0],
                                                            high=_AM_DEPTH[1]))
        if not 0 < params["mod_index"] <= 1:
            raise InputError(f"{name}: mod_index (AM depth) must be in (0, 1], got "
                             f"{params['mod_index']:g}")
        m = 1 + params["mod_index"] * m
    return Signal(unit_power(m.astype(np.complex64)), w if single else 2 * w, None, params)


def _am_ssb_wc(rng, samp_rate, n, msg_bw=None, sideband=None, mod_index=None) -> Signal:
    return _am("am-ssb-wc", rng, samp_rate, n, msg_bw, sideband, mod_index, single=True,
               carrier=True)


def _am_ssb_sc(rng, samp_rate, n, msg_bw=None, sideband=None) -> Signal:
    return _am("am-ssb-sc", rng, samp_rate, n, msg_bw, sideband, single=True, carrier=False)


def _am_dsb_wc(rng, samp_rate, n, msg_bw=None, mod_index=None) -> Signal:
    return _am("am-dsb-wc", rng, samp_rate, n, msg_bw, mod_index=mod_index, single=False,
               carrier=True)


def _am_dsb_sc(rng, samp_rate, n, msg_bw=None) -> Signal:
    return _am("am-dsb-sc", rng, samp_rate, n, msg_bw, single=False, carrier=False)


def _fm(rng, samp_rate, n, msg_bw=None, mod_index=None) -> Signal:
    w = _msg_bw("fm", rng, samp_rate, msg_bw)
    beta = _real("fm", "mod_index", draw(rng, mod_index, low=_FM_INDEX[0], high=_FM_INDEX[1]))
    carson = 2 * w * (beta + 1)
    if not (beta > 0 and carson <= samp_rate):
        raise InputError(f"fm: mod_index must be > 0 with the Carson bandwidth "
                         f"2*msg_bw*(mod_index+1) within the rate {samp_rate:g} Hz; got "
                         f"mod_index {beta:g}, msg_bw {w:g} Hz")
    m = _message(rng, samp_rate, n, w).real
    phase = np.cumsum(m) * (2 * math.pi * beta * w / samp_rate)
    return Signal(np.exp(1j * phase).astype(np.complex64), carson, None,
                  {"msg_bw_hz": w, "mod_index": beta})


# -- registration (RadioML 2018 order) -----------------------------------------------------

def _describe(name: str) -> str:
    if name in CONSTELLATIONS:
        return f"{name.upper()}, {len(CONSTELLATIONS[name])} points, RRC-shaped, 2-16 sps"
    return {"gmsk": "GMSK, BT 0.3, h 0.5, 2-16 sps",
            "oqpsk": "offset QPSK (Q rail half a symbol late), RRC-shaped",
            "fm": "analog FM of a band-limited audio-like message",
            "am-dsb-wc": "AM double sideband with carrier",
            "am-dsb-sc": "AM double sideband, suppressed carrier",
            "am-ssb-wc": "AM single sideband with carrier",
            "am-ssb-sc": "AM single sideband, suppressed carrier"}[name]


_GENERATORS = {**{name: _linear(name) for name in CONSTELLATIONS},
               "am-ssb-wc": _am_ssb_wc, "am-ssb-sc": _am_ssb_sc, "am-dsb-wc": _am_dsb_wc,
               "am-dsb-sc": _am_dsb_sc, "fm": _fm, "gmsk": _gmsk, "oqpsk": _oqpsk}

for _name in MODULATIONS:
    # Rates are nominal (sps and message bandwidth scale with it): any positive rate holds.
    register("modulation", _name, min_rate=1.0, description=_describe(_name))(
        _GENERATORS[_name])
