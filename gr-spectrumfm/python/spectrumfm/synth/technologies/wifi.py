"""IEEE 802.11a/g (non-HT, clause 17) and 802.11n HT-mixed (clause 19) 20 MHz OFDM packets.

References are to IEEE Std 802.11-2020. Each packet is built at the standard's 20 MS/s:

* L-STF (17.3.3): the 12 subcarriers ``S_{-26..26}``, 16-sample period, 10 short symbols
  (8 us); L-LTF: 1.6 us guard interval and two 3.2 us long symbols of ``L_{-26..26}``;
* L-SIG (17.3.4): RATE, LENGTH, parity and tail, convolutionally coded (K = 7,
  133/171 octal), interleaved and BPSK-mapped on 48 subcarriers, pilots at -21, -7, 7, 21;
* HT-mixed only (19.3.9): HT-SIG1/2 (QBPSK, MCS, length, CRC-8), HT-STF, one HT-LTF
  (56 subcarriers);
* data symbols: 64-point FFT, 0.8 us cyclic prefix, 48 (non-HT) or 52 (HT) data subcarriers,
  pilots ``{1, 1, 1, -1}`` (HT: rotating per symbol) times the polarity sequence ``p_n`` of
  17.3.5.10.

Simplified: the data subcarriers carry random constellation points instead of scrambled,
coded and interleaved PSDU bits (the same uniform use of the constellation); no time-domain
windowing between symbols; single spatial stream, long guard interval, 20 MHz only. Packets of
one example share PHY, MCS and length. ``burst=False`` gives back-to-back packets separated by
SIFS (16 us), the window starting inside the first one; ``burst=True`` separates them by DIFS
(34 us), a backoff of 0..15 slots of 9 us and an exponential idle time of mean ``idle_us``.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.synth.core import Signal, draw, register
from spectrumfm.synth.technologies import _ofdm

RATE = 20e6                             # native sample rate (Hz)
#: Occupied bandwidth (Hz) per PHY: used subcarriers and the empty DC, 312.5 kHz each.
BANDWIDTHS = {("11a",): 53 * RATE / 64, ("11n",): 57 * RATE / 64}
_SIFS, _SLOT, _DIFS = 320, 180, 680     # 16 us, 9 us, 34 us at 20 MS/s

#: Non-HT rate index -> (rate Mb/s, constellation size, N_DBPS, RATE bits R1..R4): the
#: modulation-dependent parameters of 17.3.2 and the RATE field of 17.3.4.2.
_NON_HT = ((6, 2, 24, "1101"), (9, 2, 36, "1111"), (12, 4, 48, "0101"), (18, 4, 72, "0111"),
           (24, 16, 96, "1001"), (36, 16, 144, "1011"), (48, 64, 192, "0001"),
           (54, 64, 216, "0011"))
#: HT MCS 0..7 (one stream, 20 MHz, 800 ns GI) -> (constellation size, N_DBPS), 19.5.
_HT = ((2, 26), (4, 52), (4, 78), (16, 104), (16, 156), (64, 208), (64, 234), (64, 260))

_STF = {-24: 1, -20: -1, -16: 1, -12: -1, -8: -1, -4: 1, 4: -1, 8: -1, 12: 1, 16: 1, 20: 1,
        24: 1}   # times sqrt(13/6) (1 + j), 17.3.3
_LTF = np.array([1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1,
                 1, 1, 1, 0, 1, -1, -1, 1, 1, -1, 1, -1, 1, -1, -1, -1, -1, -1, 1, 1, -1, -1,
                 1, -1, 1, -1, 1, 1, 1, 1])   # L_{-26..26}, 17.3.3
_HT_LTF = np.concatenate(([1, 1], _LTF, [-1, -1]))   # HTLTF_{-28..28}, 19.3.9.4.6
_PILOTS = np.array([-21, -7, 7, 21])
_PSI = np.array([1, 1, 1, -1])
_LENGTH_MAX = {"11a": 4095, "11n": 65535}


def _bins(k) -> np.ndarray:
    return np.asarray(k) % 64


def _data_subcarriers(edge: int) -> np.ndarray:
    k = np.arange(-edge, edge + 1)
    return k[(k != 0) & ~np.isin(np.abs(k), (7, 21))]


@functools.lru_cache(maxsize=1)
def pilot_polarity() -> np.ndarray:
    """``p_0..p_126`` (17.3.5.10): the scrambler x^7 + x^4 + 1 from all ones, 0 -> 1, 1 -> -1."""
    return 1 - 2 * _ofdm.msequence((0, 3), [0, 0, 0, 0, 1, 1, 1], 127).astype(np.int8)


def _symbols(rows: np.ndarray, ntones: int) -> np.ndarray:
    """Frequency rows -> time with 0.8 us cyclic prefixes, unit power per sample."""
    return _ofdm.add_cp(_ofdm.ifft_rows(rows) * np.float32(math.sqrt(64 / ntones)), 16)


def _row(k, values) -> np.ndarray:
    row = np.zeros((1, 64), np.complex64)
    row[0, _bins(k)] = values
    return row


def _encode(bits) -> np.ndarray:
    """Rate-1/2 convolutional code, generators 133 and 171 octal (17.3.5.6), A then B."""
    bits = np.asarray(bits, dtype=np.int64)
    out = np.empty(2 * bits.size, dtype=np.int64)
    for i, g in enumerate(([1, 0, 1, 1, 0, 1, 1], [1, 1, 1, 1, 0, 0, 1])):
        out[i::2] = np.convolve(bits, g)[:bits.size] % 2
    return out


def _interleave48(bits) -> np.ndarray:
    """The interleaver of one 48-bit BPSK symbol (17.3.5.7): bit k goes to 3 (k mod 16) + k/16."""
    k = np.arange(48)
    out = np.empty(48, dtype=np.int64)
    out[3 * (k % 16) + k // 16] = bits
    return out


def _sig_symbol(coded48, rotate: bool = False) -> np.ndarray:
    """One SIGNAL-type symbol: 48 coded bits interleaved, BPSK (QBPSK if ``rotate``), pilots
    ``{1, 1, 1, -1}`` (L-SIG, HT-SIG1 and HT-SIG2 use ``p_0 = p_1 = p_2 = 1``)."""
    sym = 2.0 * _interleave48(coded48) - 1
    row = _row(_data_subcarriers(26), sym * (1j if rotate else 1))
    row[0, _bins(_PILOTS)] = _PSI
    return row


def _lsb_first(value: int, width: int) -> list[int]:
    return [(value >> i) & 1 for i in range(width)]


def _crc8(bits) -> list[int]:
    """HT-SIG CRC (19.3.9.4.4): x^8 + x^2 + x + 1, ones preset, complemented, c7 first."""
    crc = 0xFF
    for b in bits:
        fb = ((crc >> 7) & 1) ^ int(b)
        crc = ((crc << 1) & 0xFF) ^ (0x07 if fb else 0)
    return [((crc ^ 0xFF) >> (7 - i)) & 1 for i in range(8)]


def _l_sig(rate_bits: str, length: int) -> np.ndarray:
    """L-SIG (17.3.4): RATE, reserved, LENGTH, even parity, tail."""
    bits = [int(b) for b in rate_bits] + [0] + _lsb_first(length, 12)
    return _sig_symbol(_encode(bits + [sum(bits) % 2] + [0] * 6))


def _ht_sig(mcs: int, length: int) -> np.ndarray:
    """HT-SIG1 and HT-SIG2 (19.3.9.4.3): MCS, 20 MHz, HT length; smoothing, not sounding,
    reserved, no aggregation or STBC, BCC, long GI; CRC; tail. Two QBPSK symbols."""
    sig1 = _lsb_first(mcs, 7) + [0] + _lsb_first(length, 16)
    sig2 = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    coded = _encode(sig1 + sig2 + _crc8(sig1 + sig2) + [0] * 6)
    return np.concatenate([_sig_symbol(coded[:48], True), _sig_symbol(coded[48:], True)])


@functools.lru_cache(maxsize=1)
def _legacy_training() -> np.ndarray:
    """L-STF and L-LTF, 320 samples (16 us)."""
    stf = _ofdm.ifft_rows(_row(list(_STF), np.sqrt(13 / 6) * (1 + 1j) * np.array(list(
        _STF.values()))))[0] * np.float32(math.sqrt(64 / 52))
    ltf = _ofdm.ifft_rows(_row(np.arange(-26, 27), _LTF))[0] * np.float32(math.sqrt(64 / 52))
    out = np.concatenate([np.tile(stf, 3)[:160], ltf[32:], ltf, ltf])
    out.flags.writeable = False
    return out


class _Packet:
    """One PPDU format: its preamble and SIGNAL fields, and data symbols made on demand."""

    def __init__(self, phy: str, mcs: int, length: int):
        self.ht = phy == "11n"
        self.order, n_dbps = _HT[mcs] if self.ht else _NON_HT[mcs][1:3]
        self.n_sym = math.ceil((16 + 8 * length + 6) / n_dbps)   # SERVICE, PSDU, tail
        if self.ht:
            l_length = 3 * math.ceil((36 + 4 * self.n_sym - 20) / 4) - 3   # 19.3.9.3.5
            head = [_legacy_training(), _symbols(_l_sig(_NON_HT[0][3], l_length), 52),
                    _symbols(_ht_sig(mcs, length), 52), np.tile(_legacy_training()[:16], 5),
                    _symbols(_row(np.arange(-28, 29), _HT_LTF), 56)]
            self.data_k, self.ntones = _data_subcarriers(28), 56
        else:
            head = [_legacy_training(), _symbols(_l_sig(_NON_HT[mcs][3], length), 52)]
            self.data_k, self.ntones = _data_subcarriers(26), 52
        self.header = np.concatenate(head)
        self.length = self.header.size + 80 * self.n_sym

    def _pilots(self, n: np.ndarray) -> np.ndarray:
        """Pilot values ``(len(n), 4)`` of data symbols ``n``: ``p_{n+1} {1, 1, 1, -1}``
        (17.3.5.10); HT: ``p_{n+3}`` times the pattern rotated by ``n`` (19.3.11.10)."""
        if not self.ht:
            return pilot_polarity()[(n + 1) % 127][:, None] * _PSI
        return pilot_polarity()[(n + 3) % 127][:, None] * _PSI[(np.arange(4) + n[:, None]) % 4]

    def samples(self, rng: np.random.Generator, p0: int, p1: int) -> np.ndarray:
        """Samples ``[p0, p1)`` of one packet, with fresh random data."""
        h = self.header.size
        parts = [self.header[p0:min(p1, h)]] if p0 < h else []
        if p1 > h:
            d0 = max(p0 - h, 0)
            j0, j1 = d0 // 80, (p1 - h - 1) // 80 + 1
            rows = np.zeros((j1 - j0, 64), np.complex64)
            rows[:, _bins(self.data_k)] = _ofdm.qam(rng, self.order, (j1 - j0, self.data_k.size))
            rows[:, _bins(_PILOTS)] = self._pilots(np.arange(j0, j1))
            x = _symbols(rows, self.ntones)
            parts.append(x[d0 - 80 * j0:d0 - 80 * j0 + p1 - max(p0, h)])
        return np.concatenate(parts)


def _gaps(rng: np.random.Generator, burst: bool, idle_us: float):
    """Idle samples after each packet, drawn as needed."""
    while True:
        if not burst:
            yield _SIFS
        else:
            yield (_DIFS + _SLOT * int(rng.integers(16))
                   + int(rng.exponential(idle_us * RATE * 1e-6)))


def _render(rng, packet: _Packet, gaps, a: int, length: int):
    x = np.zeros(length, np.complex64)
    on = np.zeros(length, bool)
    pos = 0
    for gap in gaps:
        if pos >= a + length:
            break
        lo, hi = max(a, pos), min(a + length, pos + packet.length)
        if lo < hi:
            x[lo - a:hi - a] = packet.samples(rng, lo - pos, hi - pos)
            on[lo - a:hi - a] = True
        pos += packet.length + gap
    return x, on


@register("technology", "wifi", min_rate=min(BANDWIDTHS.values()),
          description="IEEE 802.11a/g/n 20 MHz OFDM packets (L-STF, L-LTF, SIG, data)")
def wifi(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
         phy: str | None = None, mcs: int | None = None, length_bytes: int | None = None,
         idle_us: float | None = None, offset_s: float | None = None) -> Signal:
    """WiFi packets, 20 MHz channel, centred at 0 Hz.

    Args:
        rng: the random generator.
        samp_rate: output rate in Hz, at least the occupied bandwidth (16.5625 MHz non-HT,
            17.8125 MHz HT).
        n: samples wanted.
        burst: False: back-to-back packets (SIFS gaps), starting inside the first; True: the
            channel-access pattern, packets separated by DIFS + backoff + idle time.
        phy: ``"11a"`` (non-HT, also 802.11g ERP-OFDM) or ``"11n"`` (HT-mixed); drawn among
            those that fit ``samp_rate``.
        mcs: 0..7; non-HT: 6, 9, 12, 18, 24, 36, 48, 54 Mb/s; HT: MCS 0..7 (6.5..65 Mb/s).
        length_bytes: PSDU length in bytes (1..4095 non-HT, 1..65535 HT); drawn
            log-uniformly in 40..4095.
        idle_us: mean of the exponential idle time between packets in us (burst only),
            drawn log-uniformly in 20..5000 us.
        offset_s: where the window starts, in seconds from the start of the first packet:
            inside it (burst=False) or inside it and the gap after it (burst=True).

    Returns:
        the :class:`Signal`; ``bandwidth`` is 16.5625 MHz (non-HT, 52 subcarriers and DC) or
        17.8125 MHz (HT, 56 and DC).
    """
    phy = _ofdm.pick(rng, "wifi", BANDWIDTHS, {"phy": phy}, samp_rate)["phy"]
    mcs = draw(rng, mcs, low=0, high=7, integer=True)
    length_bytes = length_bytes if length_bytes is not None else int(
        np.exp(rng.uniform(np.log(40), np.log(4096))))
    if not 0 <= mcs <= 7 or not 1 <= length_bytes <= _LENGTH_MAX[phy]:
        raise InputError(f"wifi: mcs={mcs} length_bytes={length_bytes}: mcs is 0..7, "
                         f"length 1..{_LENGTH_MAX[phy]} bytes for {phy}")
    params = {"phy": phy, "mcs": int(mcs), "length_bytes": int(length_bytes)}
    if burst:
        idle_us = idle_us if idle_us is not None else float(
            np.exp(rng.uniform(np.log(20), np.log(5000))))
        params["idle_us"] = float(idle_us)
    packet = _Packet(phy, int(mcs), int(length_bytes))
    gaps = _gaps(rng, burst, idle_us)
    first_gap = next(gaps)
    span = packet.length + (first_gap if burst else 0)
    offset_s = draw(rng, offset_s, low=0.0, high=(span - 1) / RATE)
    params["offset_s"] = float(offset_s)
    gaps = itertools.chain([first_gap], gaps)
    iq, active = _ofdm.window(lambda a, m: _render(rng, packet, gaps, a, m), RATE, samp_rate,
                              n, round(offset_s * RATE))
    return Signal(iq, BANDWIDTHS[(phy,)], active, params)
