"""What the narrowband technologies share: CRCs, bit order, a timeline of packets, and
modulators that evaluate a waveform at any sample time.

The generators here do not resample a waveform made at the standard's native rate:
``scipy.signal.resample_poly`` designs its filter on every call, which alone costs more than
the 1 ms an example may take. They describe the signal on a *timeline* of the standard's
units (symbols, chips) and evaluate it at the output sample times ``u`` (in those units),
which works for any rate, including rates that are not a multiple of the symbol rate. Where
the output rate is close to the signal's bandwidth, :func:`oversampling` asks for a multiple
of it and :func:`finish` decimates with an anti-alias filter.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.special

from spectrumfm.errors import InputError
from spectrumfm.synth.core import resample

#: Timeline units kept before the first and after the last output sample, so the pulses
#: that reach into the window (Gaussian filter span, ramps) have their neighbours.
LEAD = 3

#: Output samples generated on each side when decimating, then cut (the filter's settling).
MARGIN = 12

_Q_RES = 256        # phase-pulse table points per symbol


# -- bits and checks -------------------------------------------------------------------

def bits_lsb_first(data) -> np.ndarray:
    """Bits of ``data`` (bytes or uint8 array) in transmission order, each octet LSB first."""
    return np.unpackbits(np.frombuffer(bytes(data), np.uint8), bitorder="little")


def bits_msb_first(value: int, width: int) -> np.ndarray:
    """The ``width`` bits of integer ``value``, most significant first."""
    return ((value >> np.arange(width - 1, -1, -1)) & 1).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _crc_table(poly: int, width: int) -> tuple:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        reg = byte << (width - 8)
        for _ in range(8):
            reg = ((reg << 1) ^ poly) & mask if reg & top else (reg << 1) & mask
        table.append(reg)
    return tuple(table)


def crc(bits: np.ndarray, poly: int, width: int, init: int = 0) -> np.ndarray:
    """A CRC shift register run over ``bits`` in transmission order; its bits, highest first.

    The register is the one the standards draw: ``width`` stages preset to ``init``, each
    input bit XORed with the last stage and fed back through the taps of ``poly`` (the
    generator without its ``x**width`` term). The check bits are sent last stage first.
    This one register covers BLE (``0x00065B``, 24 bits, init ``0x555555``, Core 5.x Vol 6
    Part B 3.1.1), Mode S (``0xFFF409``, 24 bits, init 0, ICAO Annex 10 Vol IV 3.1.2.3.3)
    and the 802.15.4 FCS (``0x1021``, 16 bits, init 0, IEEE 802.15.4-2006 7.2.1.9).

    Args:
        bits: uint8 0/1, a whole number of octets.
        poly: feedback taps, bit ``k`` for the ``x**k`` term.
        width: register length in bits (at least 8).
        init: the register's preset value.
    """
    if len(bits) % 8:
        raise ValueError(f"crc over {len(bits)} bits: not a whole number of octets")
    table, mask, shift = _crc_table(poly, width), (1 << width) - 1, width - 8
    reg = init
    for byte in np.packbits(bits).tolist():
        reg = ((reg << 8) & mask) ^ table[((reg >> shift) ^ byte) & 0xFF]
    return bits_msb_first(reg, width)


# -- parameters -------------------------------------------------------------------------

def require(value, allowed, what: str):
    """``value`` if it is one of ``allowed``, else :class:`InputError` listing them."""
    if value not in allowed:
        listed = (f"{allowed.start}-{allowed.stop - 1}" if isinstance(allowed, range)
                  else ", ".join(map(str, allowed)))
        raise InputError(f"{what} {value!r} is not one of {listed}")
    return value


def require_rate(samp_rate: float, min_rate: float, what: str) -> None:
    """:class:`InputError` naming the minimum rate when ``samp_rate`` cannot hold ``what``."""
    if samp_rate < min_rate:
        raise InputError(f"{what}: sample rate {samp_rate / 1e6:g} MS/s is too low for its "
                         f"bandwidth; use at least {min_rate / 1e6:g} MS/s")


def short_gap(rng: np.random.Generator, typical_s: float, window_s: float) -> float:
    """A gap (s) between back-to-back packets of a ``burst=False`` example: up to the
    standard's ``typical_s`` but at most a quarter of the window, so no window is all gap."""
    return rng.uniform(0.5, 1.0) * min(typical_s, window_s / 4)


# -- timeline ---------------------------------------------------------------------------

def oversampling(samp_rate: float, bandwidth: float) -> int:
    """Integer factor to generate at so that ``bandwidth`` (Hz) fits with room for an
    anti-alias filter: 1 when ``samp_rate`` is at least 1.5 times the bandwidth."""
    return max(1, math.ceil(1.5 * bandwidth / samp_rate - 1e-9))


def sample_times(rng: np.random.Generator, samp_rate: float, n: int, unit_rate: float,
                 m: int = 1) -> np.ndarray:
    """Times of the generated samples in timeline units (s times ``unit_rate``).

    The first sample falls at a uniformly random point of unit :data:`LEAD`; with ``m > 1`` the
    grid is ``m`` times denser and has :data:`MARGIN` output samples more on each side, for
    :func:`finish`.
    """
    n_gen = n if m == 1 else (n + 2 * MARGIN) * m
    step = unit_rate / (samp_rate * m)
    return LEAD + rng.uniform() + np.arange(n_gen, dtype=np.float64) * step


def timeline_length(u: np.ndarray) -> int:
    """Units a timeline needs to cover the sample times ``u``, with :data:`LEAD` after."""
    return int(u[-1]) + LEAD + 1


def packet_train(rng: np.random.Generator, make_packet, length: int, gap, first=None,
                 align: int = 1):
    """Packets laid end to end on a timeline of ``length`` units, with gaps between.

    Args:
        make_packet: ``make_packet(rng) -> array`` of one packet's units (symbols, chips).
        gap: ``gap(rng, packet_len) -> int``, idle units after a packet of that length.
        first: the unit where the first packet starts; None starts the timeline's window
            (unit ``LEAD``) at a uniformly random unit inside the first packet.
        align: packets start on multiples of this unit (O-QPSK chip pairs); ``first``
            must be one.

    Returns:
        ``(values, on)``: the units (0 where idle) and a bool mask of the packets.
    """
    values, on = None, np.zeros(length, bool)
    pos = first
    while pos is None or pos < length:
        p = make_packet(rng)
        if values is None:
            values = np.zeros(length, p.dtype)
        if pos is None:
            pos = (LEAD - int(rng.integers(len(p)))) // align * align
        a, b = max(pos, 0), min(pos + len(p), length)
        if b > a:
            values[a:b], on[a:b] = p[a - pos:b - pos], True
        idle = int(gap(rng, len(p)))
        pos += len(p) + -(-idle // align) * align          # idle rounded up to align
    return values, on


def burst_start(rng: np.random.Generator, spacing: float, u: np.ndarray) -> int:
    """Unit where a ``burst=True`` train's first packet starts: uniformly within the first
    ``spacing`` units (the typical packet spacing) or the window, whichever is shorter."""
    return LEAD + int(rng.uniform(0, min(spacing, u[-1] - LEAD)))


def at(mask: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The unit mask ``mask`` read at sample times ``u``."""
    return mask[u.astype(np.int64)]


# -- modulators -------------------------------------------------------------------------

def smooth_step(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a raised-cosine rise between."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


def edges(values: np.ndarray, u: np.ndarray, rise: float) -> np.ndarray:
    """Unit values held over each unit, with raised-cosine transitions ``rise`` units long
    centred on the unit boundaries (``rise`` <= 1): amplitude ramps and pulse edges."""
    b = np.rint(u).astype(np.int64)
    prev, nxt = values[b - 1], values[b]
    return prev + (nxt - prev) * smooth_step((u - b) / rise + 0.5)


@functools.lru_cache(maxsize=16)
def _phase_pulse(bt: float) -> np.ndarray:
    # q(v), v in [-2, 2] symbols: the integral of a 1-symbol rectangle through a Gaussian
    # filter of bandwidth-time product bt, centred on the symbol; rises from 0 to 1.
    v = np.arange(-2 * _Q_RES, 2 * _Q_RES + 1) / _Q_RES
    s = math.sqrt(2) * math.sqrt(math.log(2)) / (2 * math.pi * bt)
    g = 0.5 * (scipy.special.erf((v + 0.5) / s) - scipy.special.erf((v - 0.5) / s))
    q = np.cumsum(g)
    q = (q - q[0]) / (q[-1] - q[0])
    q.flags.writeable = False
    return q


def gfsk_phase(symbols: np.ndarray, u: np.ndarray, bt: float, h: float) -> np.ndarray:
    """Phase (rad) of Gaussian-filtered FSK at sample times ``u`` (symbol units).

    Symbol ``k`` (+1, -1, or 0 where idle) holds unit ``[k, k + 1)``; its frequency pulse is
    a 1-symbol rectangle through a Gaussian filter of bandwidth-time product ``bt``,
    truncated to 4 symbols, and adds ``pi * h`` radians in all (deviation ``h / 2`` times
    the symbol rate). Evaluated at each ``u`` on its own: the phase is the sum over past
    symbols plus the tabled phase pulse (1/256-symbol steps) of the 5 nearest, so nothing
    accumulates over samples and the symbol rate need not divide the sample rate.
    """
    q = _phase_pulse(bt)
    a = symbols.astype(np.float64)
    k = np.floor(u).astype(np.int64)
    phase = np.concatenate(([0.0], np.cumsum(a)))[k - 2]      # symbols before k - 2
    for j in range(-2, 3):
        idx = np.rint((u - (k + j) - 0.5 + 2.0) * _Q_RES).astype(np.int64)
        phase += a[k + j] * q[np.clip(idx, 0, len(q) - 1)]
    return np.pi * h * phase


def finish(x: np.ndarray, active: np.ndarray | None, samp_rate: float, m: int, n: int):
    """The ``n`` output samples (complex64) and activity of a grid from :func:`sample_times`:
    as they are when ``m == 1``, else decimated by ``m`` with an anti-alias filter."""
    if m > 1:
        x = resample(x, samp_rate * m, samp_rate)[MARGIN:MARGIN + n]
        active = None if active is None else active[MARGIN * m::m][:n]
    return np.asarray(x, np.complex64), active
