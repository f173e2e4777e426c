"""IEEE 802.15.4 (Zigbee) 2.4 GHz O-QPSK PHY: 250 kb/s, 2 Mchip/s DSSS (802.15.4-2006 clause 6.5).

Each octet is split into two 4-bit symbols (low nibble first), each symbol spread to its
32-chip sequence (table 73), and the chips O-QPSK modulated with half-sine pulses: even
chips on I, odd chips on Q delayed by one chip period Tc = 0.5 us (6.5.2.4). The result is
MSK with a constant envelope and a frequency of +-1/(4 Tc) = +-500 kHz. A PPDU is the SHR
(preamble of four zero octets, SFD 0xA7), the PHR (frame length) and a MAC data frame with
its FCS.
"""

from __future__ import annotations

import numpy as np

from spectrumfm.synth.core import Signal, draw, register, unit_power
from spectrumfm.synth.technologies._common import (
    at, bits_lsb_first, burst_start, crc, finish, oversampling, packet_train, require_rate,
    sample_times, short_gap, timeline_length)

CHIP_RATE = 2e6                     # chips/s (6.5.1)
#: Symbol-to-chip mapping, 802.15.4-2006 table 73: chips c0 ... c31 of symbols 0-15.
CHIP_TABLE = (
    "11011001110000110101001000101110",
    "11101101100111000011010100100010",
    "00101110110110011100001101010010",
    "00100010111011011001110000110101",
    "01010010001011101101100111000011",
    "00110101001000101110110110011100",
    "11000011010100100010111011011001",
    "10011100001101010010001011101101",
    "10001100100101100000011101111011",
    "10111000110010010110000001110111",
    "01111011100011001001011000000111",
    "01110111101110001100100101100000",
    "00000111011110111000110010010110",
    "01100000011101111011100011001001",
    "10010110000001110111101110001100",
    "11001001011000000111011110111000",
)
CHIPS = np.array([[2 * int(c) - 1 for c in row] for row in CHIP_TABLE], np.int8)
SFD = 0xA7
FCS_POLY = 0x1021                   # ITU-T CRC-16, x^16 + x^12 + x^5 + 1 (7.2.1.9)
MAX_PSDU = 127                      # aMaxPHYPacketSize, octets
TURNAROUND = 192e-6                 # aTurnaroundTime, 12 symbols, s (6.4.1)
#: 99 % occupied bandwidth (Hz) of the MSK-like signal, measured on long packet trains.
BANDWIDTH = 2.33e6
MIN_RATE = 2.7e6                    # 1.15 times the bandwidth, rounded up


def mac_frame(rng: np.random.Generator, payload_len: int) -> bytes:
    """A MAC data frame (7.2.2.2): frame control (data, PAN ID compression, short
    addresses, ack request either way), sequence number, PAN id, destination and source
    short addresses, ``payload_len`` random octets, and the FCS."""
    header = bytes([0x61 if rng.integers(2) else 0x41, 0x88]) + rng.integers(
        0, 256, 7, np.uint8).tobytes()
    msdu = header + rng.integers(0, 256, payload_len, np.uint8).tobytes()
    fcs = np.packbits(crc(bits_lsb_first(msdu), FCS_POLY, 16), bitorder="little")
    return msdu + fcs.tobytes()


def ppdu_symbols(psdu: bytes) -> np.ndarray:
    """The 4-bit data symbols of a PPDU (SHR, PHR, PSDU), each octet's low nibble first."""
    octets = np.frombuffer(bytes(4) + bytes([SFD, len(psdu)]) + psdu, np.uint8)
    return np.stack((octets & 0x0F, octets >> 4), axis=1).ravel()


def oqpsk(chips: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Half-sine O-QPSK at sample times ``u`` (chip units): chip ``j`` (+-1, 0 where idle)
    is a half sine over ``[j, j + 2)``, on I for even ``j`` and Q for odd ``j``."""
    k_i = 2 * np.floor(u / 2).astype(np.int64)
    k_q = 2 * np.floor((u - 1) / 2).astype(np.int64) + 1
    i = chips[k_i] * np.sin(np.pi / 2 * (u - k_i))
    q = chips[k_q] * np.sin(np.pi / 2 * (u - k_q))
    return i + 1j * q


@register("technology", "zigbee", min_rate=MIN_RATE,
          description="IEEE 802.15.4 2.4 GHz O-QPSK DSSS (Zigbee), half-sine pulses")
def zigbee(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
           interval_ms: float | None = None) -> Signal:
    """802.15.4 O-QPSK frames.

    Args:
        rng: random generator.
        samp_rate: output rate, S/s (at least 2.7 MS/s).
        n: number of samples.
        burst: False: frames back to back (aTurnaroundTime apart, at most a quarter of the
            window), starting at a random point of one. True: frames ``interval_ms`` apart
            on average (0.5-1.5 times it); the first within the first interval or window.
        interval_ms: mean frame spacing in ms (``burst=True``); drawn from 2-50 ms.

    Returns:
        A :class:`Signal`; ``params`` holds interval_ms when bursty.
    """
    require_rate(samp_rate, MIN_RATE, "zigbee")
    m = oversampling(samp_rate, BANDWIDTH)
    u = sample_times(rng, samp_rate, n, CHIP_RATE, m)
    params = {}

    def frame(r):
        psdu = mac_frame(r, int(r.integers(10, MAX_PSDU - 11 + 1)))
        return CHIPS[ppdu_symbols(psdu)].ravel()

    if burst:
        interval_ms = params["interval_ms"] = draw(rng, interval_ms, low=2.0, high=50.0)
        spacing = interval_ms * 1e-3 * CHIP_RATE
        first = burst_start(rng, spacing, u) // 2 * 2

        def gap(r, length):
            return max(0, int(spacing * r.uniform(0.5, 1.5)) - length)
    else:
        first = None

        def gap(r, length):
            return int(short_gap(r, TURNAROUND, n / samp_rate) * CHIP_RATE)
    chips, on = packet_train(rng, frame, timeline_length(u), gap, first, align=2)
    x = oqpsk(chips, u) * np.exp(1j * rng.uniform(0, 2 * np.pi))
    iq, active = finish(x, at(on, u) | at(on, u - 1), samp_rate, m, n)
    return Signal(unit_power(iq, active), BANDWIDTH, active, params)
