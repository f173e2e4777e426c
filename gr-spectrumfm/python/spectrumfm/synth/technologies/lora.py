"""LoRa chirp spread spectrum packets (Semtech SX127x/SX126x physical layer, LoRa Alliance
RP002 for the regional bandwidths).

A symbol of spreading factor SF lasts ``T = 2**SF / BW`` and is a linear chirp sweeping the
bandwidth ``BW`` once, slope ``BW / T = BW**2 / 2**SF`` Hz/s; data symbol ``s`` is the
up-chirp started ``s / 2**SF`` of the way up and wrapped (a cyclic shift). A packet is the
preamble of unshifted up-chirps, two sync-word symbols (SX127x mapping: nibble times 8),
2.25 down-chirps (the SFD), then the header and payload symbols. The phase is continuous,
as from the chips' DDS.

The payload's symbol count follows the SX1276 datasheet's time-on-air formula (explicit
header, CRC on, low-data-rate optimisation when ``T > 16 ms``); their values are random,
which is what whitened, interleaved, Gray-mapped data looks like, except that the 8 header
symbols (and all of them with low-data-rate optimisation) carry ``SF - 2`` bits: multiples
of 4.
"""

from __future__ import annotations

import math

import numpy as np

from spectrumfm.synth.core import Signal, draw, register, unit_power
from spectrumfm.synth.technologies._common import require, require_rate, short_gap

BANDWIDTHS = (125e3, 250e3, 500e3)
SPREADING_FACTORS = tuple(range(7, 13))
SYNC_WORDS = (0x12, 0x34)           # private networks, LoRaWAN public
SFD_CHIRPS = 2.25


def payload_symbols(sf: int, cr: int, payload_len: int, t_sym: float) -> int:
    """Symbols after the SFD: header and payload (SX1276 datasheet 4.1.1.7, explicit header,
    CRC on); ``cr`` 1-4 is the coding rate 4/(4 + cr)."""
    de = 1 if t_sym > 16e-3 else 0
    blocks = math.ceil((8 * payload_len - 4 * sf + 28 + 16) / (4 * (sf - 2 * de)))
    return 8 + max(blocks * (cr + 4), 0)


def packet(rng: np.random.Generator, sf: int, cr: int, preamble: int, sync_word: int,
           t_sym: float):
    """One packet's chirps: ``(kind, shift, duration)`` arrays, kind +1 for an up-chirp and
    -1 for a down-chirp, shift in 0..2**SF-1, duration in symbols (0.25 for the last SFD
    quarter)."""
    n_pay = payload_symbols(sf, cr, int(rng.integers(8, 65)), t_sym)
    data = rng.integers(0, 2 ** sf, n_pay)
    reduced = n_pay if t_sym > 16e-3 else 8
    data[:reduced] &= ~3
    sync = [(sync_word >> 4) * 8, (sync_word & 0xF) * 8]
    kind = np.r_[np.ones(preamble + 2), -np.ones(3), np.ones(n_pay)]
    shift = np.r_[np.zeros(preamble), sync, np.zeros(3), data]
    dur = np.r_[np.ones(preamble + 4), SFD_CHIRPS - 2, np.ones(n_pay)]
    return kind, shift, dur


def chirp_frequency(kind, shift, start, sf: int, u: np.ndarray) -> np.ndarray:
    """Instantaneous frequency in units of BW (-0.5..0.5) at times ``u`` (symbols) of the
    chirps starting at ``start`` (0 where ``kind`` is 0, idle), and where they are on."""
    i = np.searchsorted(start, u, side="right") - 1
    tau = u - start[i]
    up = np.mod(shift[i] / 2 ** sf + tau, 1.0) - 0.5
    return np.where(kind[i] > 0, up, np.where(kind[i] < 0, 0.5 - tau, 0.0)), kind[i] != 0


@register("technology", "lora", min_rate=BANDWIDTHS[0],
          description="LoRa chirp spread spectrum, BW 125/250/500 kHz, SF 7-12")
def lora(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
         bw: float | None = None, sf: int | None = None, cr: int | None = None,
         preamble: int = 8, sync_word: int | None = None) -> Signal:
    """LoRa packets, evaluated directly at ``samp_rate`` (no resampling).

    Args:
        rng: random generator.
        samp_rate: output rate, S/s, at least ``bw`` (the rate LoRa receivers sample at).
        n: number of samples.
        burst: False: packets back to back (gaps up to one symbol and a quarter of the
            window), starting at a random point of one, so a short window may hold a part
            of a single chirp. True: gaps of 1-10 packet durations (duty cycle 9-50 %); the
            first packet starts within the first gap or the window.
        bw: bandwidth, Hz: 125e3, 250e3 or 500e3; drawn among those ``samp_rate`` holds.
        sf: spreading factor 7-12; drawn.
        cr: coding rate index 1-4 (4/5 .. 4/8), sets the payload's length; drawn.
        preamble: up-chirps in the preamble (8 by default, as LoRaWAN).
        sync_word: 0x12 or 0x34; drawn.

    Returns:
        A :class:`Signal` with ``params`` bw, sf, cr, preamble, sync_word.
    """
    fitting = tuple(b for b in BANDWIDTHS if b <= samp_rate) or BANDWIDTHS[:1]
    bw = float(require(draw(rng, bw, fitting), BANDWIDTHS, "lora bw"))
    require_rate(samp_rate, bw, f"lora {bw / 1e3:g} kHz")
    sf = require(draw(rng, sf, SPREADING_FACTORS), SPREADING_FACTORS, "lora sf")
    cr = require(draw(rng, cr, range(1, 5)), range(1, 5), "lora cr")
    sync_word = require(draw(rng, sync_word, SYNC_WORDS), SYNC_WORDS, "lora sync_word")
    t_sym = 2 ** sf / bw
    span = n / samp_rate / t_sym                      # window, symbols
    parts, t, window_start = [], 0.0, None
    while window_start is None or t < window_start + span + 1:
        kind, shift, dur = packet(rng, sf, cr, preamble, sync_word, t_sym)
        total = dur.sum()
        if burst:
            gap = total * rng.uniform(1, 10)
            idle = rng.uniform(0, min(gap, span)) if window_start is None else gap
            window_start = 0.0
        else:
            idle = short_gap(rng, 1.0, span) if parts else 0.0
            window_start = rng.uniform(0, total) if window_start is None else window_start
        parts += [([0.0], [0.0], [idle]), (kind, shift, dur)]
        t += idle + total
    kind, shift, dur = (np.concatenate(p) for p in zip(*parts))
    start = np.concatenate(([0.0], np.cumsum(dur)[:-1]))
    step = samp_rate * t_sym
    u = window_start + np.arange(n) / step            # sample times, symbols
    freq, on = chirp_frequency(kind, shift, start, sf, u + 0.5 / step)
    # Phase at each sample: the frequency integrated to it by the midpoint rule.
    phase = np.concatenate(([0.0], np.cumsum(freq[:-1]))) * (2 * np.pi * bw / samp_rate)
    phase += rng.uniform(0, 2 * np.pi)
    iq = (on * np.exp(1j * phase)).astype(np.complex64)
    params = {"bw": bw, "sf": sf, "cr": cr, "preamble": preamble, "sync_word": sync_word}
    return Signal(unit_power(iq, on), bw, on, params)
