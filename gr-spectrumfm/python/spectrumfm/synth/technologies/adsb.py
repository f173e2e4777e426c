"""ADS-B: Mode S extended squitters on 1090 MHz (ICAO Annex 10 Vol IV 3.1.2; RTCA DO-260B).

A squitter is an 8 us preamble (0.5 us pulses at 0, 1, 3.5 and 4.5 us) and 112 bits of
pulse-position modulation at 1 Mbit/s: a 1 is a 0.5 us pulse in the first half of its
microsecond, a 0 in the second; 120 us in all. The bits are a DF17 message (downlink format
17, capability, 24-bit ICAO address, 56-bit ME field, 24-bit parity: the CRC with generator
polynomial 0xFFF409 over the first 88 bits, 3.1.2.3.3), amplitude-modulating a carrier whose
phase is random per message (another aircraft, or the same one's transmitter keyed again).

The timeline unit is the 0.5 us chip. Pulse edges are raised-cosine rises of 0.05-0.1 us
(DO-260B 2.2.3.1.2), widened to one sample period at rates below 1/rise so the pulses are
sampled without aliasing, as a receiver's front-end filter would see them.
"""

from __future__ import annotations

import numpy as np

from spectrumfm.synth.core import Signal, draw, register, unit_power
from spectrumfm.synth.technologies._common import (
    at, bits_msb_first, burst_start, crc, edges, packet_train, require_rate, sample_times,
    short_gap, timeline_length)

CHIP_RATE = 2e6                     # 0.5 us chips, chips/s
PREAMBLE = np.array([1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0], np.uint8)
PARITY_POLY = 0xFFF409              # Mode S generator polynomial, x^24 term implied
DF17, CA_AIRBORNE = 17, 5
#: ME type codes and how often a transponder squitters each (DO-260B 2.2.3.3.1.4):
#: airborne position and velocity twice a second, identification every 5 s.
TYPE_CODES, TYPE_WEIGHTS = (11, 19, 4), (2.0, 2.0, 0.2)
_TYPE_CDF = np.cumsum(TYPE_WEIGHTS)[:-1] / sum(TYPE_WEIGHTS)
#: 99 % occupied bandwidth (MHz) of a squitter train against the pulses' rise time (us),
#: measured at 200 MS/s; interpolated, and capped at the sample rate.
RISE_US = (0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
BANDWIDTH_MHZ = (13.7, 10.3, 9.6, 6.4, 6.0, 3.3, 2.8, 2.6)
MIN_RATE = 2e6                      # what 1090 MHz receivers (dump1090) sample at
SHORT_GAP = 20e-6                   # between back-to-back squitters, s


def df17_bits(rng: np.random.Generator, icao: int) -> np.ndarray:
    """112 bits of a DF17 extended squitter from ``icao``: the ME field is the type code
    then 51 random bits (no CPR position encoding), and the parity its real CRC."""
    tc = TYPE_CODES[int(np.searchsorted(_TYPE_CDF, rng.uniform()))]
    fields = (((DF17 << 3 | CA_AIRBORNE) << 24 | icao) << 5) | tc       # 37 bits
    head = np.concatenate((bits_msb_first(fields, 37), rng.integers(0, 2, 51, np.uint8)))
    return np.concatenate((head, crc(head, PARITY_POLY, 24)))


def squitter_chips(bits: np.ndarray) -> np.ndarray:
    """The 240 chips (0/1) of one squitter: preamble, then each bit as a pulse pair."""
    return np.concatenate((PREAMBLE, np.stack((bits, 1 - bits), axis=1).ravel()))


@register("technology", "adsb", min_rate=MIN_RATE,
          description="ADS-B 1090 MHz Mode S extended squitter (DF17), PPM pulses")
def adsb(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
         rate_hz: float | None = None, rise_us: float | None = None) -> Signal:
    """Extended squitters from a few aircraft.

    Args:
        rng: random generator.
        samp_rate: output rate, S/s (at least 2 MS/s).
        n: number of samples.
        burst: False: squitters back to back (gaps of 10-20 us, at most a quarter of the
            window), starting at a random point of one. True: Poisson arrivals at
            ``rate_hz`` (the 1090 MHz channel as a receiver hears it; no overlaps); the
            first within the mean gap or the window.
        rate_hz: squitters per second on the channel (``burst=True``); drawn log-uniformly
            from 100-2000.
        rise_us: pulse rise and fall time, us; drawn from 0.05-0.1.

    Returns:
        A :class:`Signal` with ``params`` rise_us (and rate_hz when bursty); the active
        samples are whole squitters, PPM's empty chips included, and have unit power.
    """
    require_rate(samp_rate, MIN_RATE, "adsb")
    rise_us = draw(rng, rise_us, low=0.05, high=0.1)
    rise = min(max(rise_us, 1e6 / samp_rate), 0.5)    # us, as sampled
    u = sample_times(rng, samp_rate, n, CHIP_RATE)
    aircraft = rng.integers(0, 2 ** 24, int(rng.integers(1, 21)))
    params = {"rise_us": rise_us}

    def squitter(r):
        chips = squitter_chips(df17_bits(r, int(aircraft[r.integers(len(aircraft))])))
        return chips * np.exp(1j * r.uniform(0, 2 * np.pi))

    if burst:
        if rate_hz is None:
            rate_hz = float(np.exp(rng.uniform(np.log(100), np.log(2000))))
        params["rate_hz"] = rate_hz
        mean_gap = CHIP_RATE / rate_hz
        first = burst_start(rng, mean_gap, u)

        def gap(r, length):
            return int(r.exponential(mean_gap))
    else:
        first = None

        def gap(r, length):
            return int(short_gap(r, SHORT_GAP, n / samp_rate) * CHIP_RATE)
    chips, on = packet_train(rng, squitter, timeline_length(u), gap, first)
    iq, active = edges(chips, u, rise / 0.5).astype(np.complex64), at(on, u)
    bandwidth = min(float(np.interp(rise, RISE_US, BANDWIDTH_MHZ)) * 1e6, samp_rate)
    return Signal(unit_power(iq, active), bandwidth, active, params)
