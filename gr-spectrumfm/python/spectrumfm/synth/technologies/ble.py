"""Bluetooth Low Energy advertising packets, LE 1M and LE 2M PHYs (Core Specification 5.x).

Each packet is built bit for bit: preamble, the advertising access address ``0x8E89BED6``,
an advertising PDU, its CRC-24 and the data whitening, then GFSK-modulated (Vol 6 Part A
3.1: BT 0.5, modulation index 0.5, so +-250 kHz at 1 Msym/s and +-500 kHz at 2 Msym/s; a
1 bit is a positive deviation).

LE 1M packets are legacy ``ADV_IND``/``ADV_NONCONN_IND`` PDUs as sent on the primary
advertising channels 37-39; LE 2M packets are ``AUX_ADV_IND`` PDUs (extended advertising),
which is how the 2M PHY carries the advertising access address, on secondary channels 0-36.
"""

from __future__ import annotations

import functools

import numpy as np

from spectrumfm.synth.core import Signal, draw, register, unit_power
from spectrumfm.synth.technologies._common import (
    at, bits_lsb_first, burst_start, crc, edges, finish, gfsk_phase, oversampling,
    packet_train, require, require_rate, sample_times, short_gap, timeline_length)

#: Symbol rate of each PHY, symbols/s (Vol 6 Part A 3.1).
PHYS = {"1M": 1e6, "2M": 2e6}
BT, H = 0.5, 0.5
ACCESS_ADDRESS = 0x8E89BED6         # advertising physical channel (Vol 6 Part B 2.1.2)
CRC_POLY, CRC_INIT = 0x00065B, 0x555555     # Vol 6 Part B 3.1.1
#: 99 % occupied bandwidth of the GFSK signal (Hz), measured on long packet trains.
BANDWIDTH = {"1M": 1.04e6, "2M": 2.08e6}
#: Lowest sample rate holding that bandwidth (1.15 times it, rounded up), S/s.
MIN_RATE = {"1M": 1.2e6, "2M": 2.4e6}
T_IFS = 150e-6                      # inter frame space, s (Vol 6 Part B 4.1.1)
MAX_ADV_DELAY = 10e-3               # advDelay, s (Vol 6 Part B 4.4.2.2.1)
RAMP = 1.0                          # transmitter on/off ramp, symbols
ADV_IND, ADV_NONCONN_IND, AUX_ADV_IND = 0b0000, 0b0010, 0b0111


@functools.lru_cache(maxsize=40)
def _whitening_period(channel: int) -> np.ndarray:
    # Vol 6 Part B 3.2: 7-stage LFSR x^7 + x^4 + 1, position 0 preset to 1 and positions
    # 1..6 to the channel index (MSB in position 1); the output is position 6.
    pos = [1] + [(channel >> (5 - i)) & 1 for i in range(6)]
    out = []
    for _ in range(127):
        bit = pos[6]
        out.append(bit)
        pos = [bit, pos[0], pos[1], pos[2], pos[3] ^ bit, pos[4], pos[5]]
    return np.array(out, np.uint8)


def whitening(channel: int, n: int) -> np.ndarray:
    """The first ``n`` bits of the data-whitening sequence of channel index ``channel``."""
    period = _whitening_period(channel)
    return np.resize(period, n)


def _adv_data(rng: np.random.Generator, max_extra: int) -> bytes:
    # Flags AD structure (LE General Discoverable, BR/EDR not supported), then a
    # manufacturer-specific AD structure: company id and up to max_extra random bytes.
    extra = int(rng.integers(0, max_extra + 1))
    mfg = bytes([extra + 3, 0xFF]) + rng.integers(0, 256, extra + 2, np.uint8).tobytes()
    return bytes([0x02, 0x01, 0x06]) + mfg


def advertising_pdu(rng: np.random.Generator, phy: str, adv_addr: bytes) -> bytes:
    """One advertising PDU: 16-bit header (type, TxAdd = random address, length) and payload.

    LE 1M: legacy ``ADV_IND`` or ``ADV_NONCONN_IND`` with AdvA and AdvData (13-37 octets,
    Vol 6 Part B 2.3.1). LE 2M: ``AUX_ADV_IND`` with the common extended advertising payload
    (extended header with AdvA and ADI, then AdvData; Vol 6 Part B 2.3.4).
    """
    if phy == "1M":
        pdu_type = ADV_IND if rng.integers(2) else ADV_NONCONN_IND
        payload = adv_addr + _adv_data(rng, 24)
    else:
        pdu_type = AUX_ADV_IND
        adi = rng.integers(0, 256, 2, np.uint8).tobytes()
        ext_header = bytes([0x09]) + bytes([0b0000_1001]) + adv_addr + adi
        payload = ext_header + _adv_data(rng, 50)
    return bytes([pdu_type | 0x40, len(payload)]) + payload


def packet_bits(pdu: bytes, phy: str, channel: int) -> np.ndarray:
    """A packet's bits in air order: preamble, access address, whitened PDU and CRC.

    The preamble alternates, starting with the access address's first bit (Vol 6 Part B
    2.1.1): 8 bits on LE 1M, 16 on LE 2M.
    """
    aa = bits_lsb_first(ACCESS_ADDRESS.to_bytes(4, "little"))
    preamble = (np.arange(8 if phy == "1M" else 16) + aa[0]) % 2
    body = bits_lsb_first(pdu)
    body = np.concatenate((body, crc(body, CRC_POLY, 24, CRC_INIT)))
    return np.concatenate((preamble, aa, body ^ whitening(channel, len(body)))).astype(np.uint8)


@register("technology", "ble", min_rate=MIN_RATE["1M"],
          description="Bluetooth LE advertising, GFSK 1M/2M PHY with whitening and CRC")
def ble(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
        phy: str | None = None, channel: int | None = None,
        interval_ms: float | None = None) -> Signal:
    """Bluetooth LE advertising packets.

    Args:
        rng: random generator.
        samp_rate: output rate, S/s (at least 1.2 MS/s for LE 1M, 2.4 MS/s for LE 2M).
        n: number of samples.
        burst: False: packets back to back (T_IFS = 150 us apart, at most a quarter of the
            window), starting at a random point of one. True: one packet per advertising
            event (advInterval + advDelay apart); the first starts within the first
            interval or the window, whichever is shorter.
        phy: ``"1M"`` or ``"2M"``; drawn among those ``samp_rate`` holds when None.
        channel: channel index 0-39, seeds the whitening; drawn from 37-39 (1M) or 0-36 (2M).
        interval_ms: advInterval in ms (``burst=True``); drawn from 20-100 ms when None.

    Returns:
        A :class:`Signal` with ``params`` phy, channel (and interval_ms when bursty).
    """
    fitting = tuple(p for p in PHYS if MIN_RATE[p] <= samp_rate) or ("1M",)
    phy = require(draw(rng, phy, fitting), tuple(PHYS), "ble phy")
    require_rate(samp_rate, MIN_RATE[phy], f"ble {phy}")
    channel = int(draw(rng, channel, (37, 38, 39) if phy == "1M" else tuple(range(37))))
    require(channel, range(40), "ble channel")
    rate = PHYS[phy]
    m = oversampling(samp_rate, BANDWIDTH[phy])
    u = sample_times(rng, samp_rate, n, rate, m)
    adv_addr = rng.integers(0, 256, 6, np.uint8).tobytes()
    params = {"phy": phy, "channel": channel}

    def packet(r):
        return 2 * packet_bits(advertising_pdu(r, phy, adv_addr), phy, channel).astype(np.int8) - 1

    if burst:
        interval_ms = params["interval_ms"] = draw(rng, interval_ms, low=20.0, high=100.0)
        period = interval_ms * 1e-3 * rate
        first = burst_start(rng, period, u)

        def gap(r, length):
            return max(0, int(period + r.uniform(0, MAX_ADV_DELAY) * rate) - length)
    else:
        first = None

        def gap(r, length):
            return int(short_gap(r, T_IFS, n / samp_rate) * rate)
    sym, on = packet_train(rng, packet, timeline_length(u), gap, first)
    phase = gfsk_phase(sym, u, BT, H) + rng.uniform(0, 2 * np.pi)
    x = edges(on.astype(np.float32), u, RAMP) * np.exp(1j * phase)
    iq, active = finish(x, at(on, u), samp_rate, m, n)
    return Signal(unit_power(iq, active), BANDWIDTH[phy], active, params)
