"""DVB-T terrestrial TV (ETSI EN 300 744 V1.6.1), 2k and 8k modes, 6/7/8 MHz channels.

Built at the elementary rate ``1/T`` (64/7 MHz in 8 MHz channels, 8 MHz in 7 MHz, 48/7 MHz in
6 MHz; clause 4.4) with the reference signals of clause 4.5 and the TPS of clause 4.6:

* OFDM (4.4): K = 1705 carriers on a 2048-point FFT (2k) or 6817 on 8192 (8k), carrier
  ``k`` at ``(k - (K - 1)/2) / T_U``; guard interval 1/4, 1/8, 1/16 or 1/32 of ``T_U``;
  68 symbols per frame, 4 frames per super-frame;
* pilot values (4.5.2): ``4/3 x 2 (1/2 - w_k)``, ``w_k`` from the PRBS x^11 + x^2 + 1
  started at all ones on carrier 0 (one value per carrier);
* scattered pilots (4.5.3): carriers ``k = 3 (l mod 4) + 12 p``;
* continual pilots (4.5.4, Table 7): 45 carriers (2k), 177 (8k);
* TPS (4.6, Table 8): 17 (2k) or 68 (8k) carriers, DBPSK of the 68-bit TPS word of each frame
  (synchronisation word, length, frame number, constellation, hierarchy, code rates, guard
  interval, mode, cell id, BCH(67, 53) parity), the reference ``2 (1/2 - w_k)`` in symbol 0;
* data carriers (4.3.5): QPSK, 16QAM or 64QAM, unit mean power.

Simplified: data carriers carry random constellation points (no MPEG-TS, outer/inner coding or
interleaving: the constellation is used uniformly just the same); non-hierarchical only; no
transmitter spectrum shaping beyond the unfiltered OFDM. The broadcast never stops, so
``burst`` changes nothing.
"""

from __future__ import annotations

import functools

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.synth.core import Signal, draw, register
from spectrumfm.synth.technologies import _ofdm

#: Mode -> (FFT size, carriers K).
MODES = {"2k": (2048, 1705), "8k": (8192, 6817)}
GUARDS = {"1/32": 32, "1/16": 16, "1/8": 8, "1/4": 4}   # in the TPS order 00, 01, 10, 11
CODE_RATES = ("1/2", "2/3", "3/4", "5/6", "7/8")
_MODULATIONS = ("qpsk", "16qam", "64qam")
_CONTINUAL_2K = np.array([
    0, 48, 54, 87, 141, 156, 192, 201, 255, 279, 282, 333, 432, 450, 483, 525, 531, 618, 636,
    714, 759, 765, 780, 804, 873, 888, 918, 939, 942, 969, 984, 1050, 1101, 1107, 1110, 1137,
    1140, 1146, 1206, 1269, 1323, 1377, 1491, 1683, 1704])
_TPS_2K = np.array([34, 50, 209, 346, 413, 569, 595, 688, 790, 901, 1073, 1219, 1262, 1286,
                    1469, 1594, 1687])
_SYNC = ("0011010111101110", "1100101000010001")   # frames 1, 3 and 2, 4 (4.6.2.2)


def elementary_rate(channel_mhz: int) -> float:
    """``1/T`` in Hz: 64/7 MHz for an 8 MHz channel, scaled with the channel (4.4)."""
    return 8e6 * channel_mhz / 7


#: Occupied bandwidth (Hz) per (mode, channel MHz): K carriers of 1/T_U.
BANDWIDTHS = {(mode, ch): k * elementary_rate(ch) / nfft
              for mode, (nfft, k) in MODES.items() for ch in (6, 7, 8)}


@functools.lru_cache(maxsize=2)
def carriers(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Continual-pilot and TPS carrier indices (Tables 7 and 8): the 8k tables are the 2k
    ones repeated every 1704 carriers."""
    reps = 1 if mode == "2k" else 4
    cont = np.unique(np.concatenate([_CONTINUAL_2K + 1704 * j for j in range(reps)]))
    tps = np.concatenate([_TPS_2K + 1704 * j for j in range(reps)])
    return cont, tps


@functools.lru_cache(maxsize=2)
def prbs(k: int) -> np.ndarray:
    """``w_0..w_{k-1}`` (4.5.2): x^11 + x^2 + 1, all ones at first."""
    return _ofdm.msequence((0, 2), [1] * 11, k)


def _bits(value: int, width: int) -> list[int]:
    return [(value >> (width - 1 - i)) & 1 for i in range(width)]


def bch_parity(bits53) -> list[int]:
    """The 14 parity bits of the shortened BCH(67, 53) code (4.6.2.11), s54..s67: the
    remainder of ``m(x) x^14`` by ``x^14 + x^9 + x^8 + x^6 + x^5 + x^4 + x^2 + x + 1``, ``s1``
    the highest power."""
    g = 0b100001101110111
    reg = 0
    for b in list(bits53) + [0] * 14:
        reg = (reg << 1) | int(b)
        if reg >> 14:
            reg ^= g
    return _bits(reg, 14)


def tps_word(frame: int, mode: str, guard: str, modulation: str, code_rate: str,
             cell_id: int) -> list[int]:
    """``s1..s67`` of frame 0..3 of the super-frame (4.6.2), cell id and no DVB-H signalling."""
    cell_byte = cell_id >> 8 if frame % 2 == 0 else cell_id & 0xFF
    bits = ([int(b) for b in _SYNC[frame % 2]] + _bits(0b011111, 6) + _bits(frame, 2)
            + _bits(_MODULATIONS.index(modulation), 2) + [0, 0, 0]
            + _bits(CODE_RATES.index(code_rate), 3) + [0, 0, 0]
            + _bits(list(GUARDS).index(guard), 2) + _bits(list(MODES).index(mode), 2)
            + _bits(cell_byte, 8) + [0] * 6)
    return bits + bch_parity(bits)


@functools.lru_cache(maxsize=8)
def _timeline(nfft: int, cp: int) -> _ofdm.Timeline:
    """The super-frame: 4 frames of 68 symbols."""
    return _ofdm.Timeline(nfft, np.full(4 * 68, cp))


@functools.lru_cache(maxsize=1024)
def _tps_signs(frame: int, mode: str, guard: str, modulation: str, code_rate: str,
               cell_id: int) -> np.ndarray:
    """``(68,)`` DBPSK state of the TPS carriers in each symbol of ``frame``: +-1 times the
    reference of symbol 0 (4.6.1)."""
    word = np.array([0] + tps_word(frame, mode, guard, modulation, code_rate, cell_id))
    return np.cumprod(1 - 2 * word).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _mode_tables(mode: str) -> dict:
    """What a mode's symbols share: FFT bins, pilot values, pilot and TPS carriers."""
    nfft, k_total = MODES[mode]
    k = np.arange(k_total)
    ref = 1 - 2 * prbs(k_total).astype(np.float32)
    continual, tps = carriers(mode)
    return {"bins": (k - (k_total - 1) // 2) % nfft, "pilot": np.float32(4 / 3) * ref,
            "scattered": (k % 12)[None, :] == 3 * np.arange(4)[:, None],   # (4, K)
            "continual": continual, "tps": tps, "tps_ref": ref[tps]}


class _Transmitter:
    """One DVB-T multiplex's OFDM symbols."""

    def __init__(self, rng, mode: str, guard: str, modulation: str, code_rate: str,
                 cell_id: int):
        self.rng, self.order, self.nfft = rng, _ofdm.ORDERS[modulation], MODES[mode][0]
        self.tps_key = (mode, guard, modulation, code_rate, cell_id)
        self.t = _mode_tables(mode)

    def grid(self, g: np.ndarray):
        """FFT rows of global symbols ``g``, all on (see :meth:`Timeline.render`)."""
        t, l, frame = self.t, g % 68, (g // 68) % 4
        data = _ofdm.qam(self.rng, self.order, (g.size, t["bins"].size))
        rows = np.where(t["scattered"][l % 4], t["pilot"], data)
        rows[:, t["continual"]] = t["pilot"][t["continual"]]
        signs = np.array([_tps_signs(int(f), *self.tps_key)[li] for f, li in zip(frame, l)])
        rows[:, t["tps"]] = signs[:, None] * t["tps_ref"]
        out = np.zeros((g.size, self.nfft), np.complex64)
        out[:, t["bins"]] = rows
        return out, np.ones(g.size, bool)


@register("technology", "dvbt", min_rate=min(BANDWIDTHS.values()),
          description="DVB-T 2k/8k OFDM, 6/7/8 MHz (continual, scattered and TPS pilots)")
def dvbt(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
         mode: str | None = None, channel_mhz: int | None = None, guard: str | None = None,
         modulation: str | None = None, code_rate: str | None = None,
         cell_id: int | None = None, offset_s: float | None = None) -> Signal:
    """A DVB-T signal centred at 0 Hz.

    Args:
        rng: the random generator.
        samp_rate: output rate in Hz, at least the occupied bandwidth: 7.61 MHz in an 8 MHz
            channel (5.71 MHz in 6 MHz).
        n: samples wanted.
        burst: no effect (the broadcast never stops).
        mode: ``"2k"`` or ``"8k"``.
        channel_mhz: 6, 7 or 8; when None, 8 if it fits ``samp_rate``, else the widest that
            does.
        guard: guard interval ``"1/4"``, ``"1/8"``, ``"1/16"`` or ``"1/32"``.
        modulation: ``qpsk``, ``16qam`` or ``64qam``.
        code_rate: inner code rate signalled in the TPS, ``"1/2"`` .. ``"7/8"``.
        cell_id: 0..65535, signalled in the TPS.
        offset_s: where the window starts in the super-frame (4 frames of 68 symbols), s.

    Returns:
        the :class:`Signal`; ``bandwidth`` is ``K / T_U`` (7.61 MHz in 8 MHz channels).
    """
    if channel_mhz is None:
        fitting = [ch for (_, ch), bw in BANDWIDTHS.items() if bw <= samp_rate]
        channel_mhz = max(fitting, default=None)
    variant = _ofdm.pick(rng, "dvbt", BANDWIDTHS, {"mode": mode, "channel_mhz": channel_mhz},
                         samp_rate)
    params = dict(variant, guard=draw(rng, guard, tuple(GUARDS)),
                  modulation=draw(rng, modulation, _MODULATIONS),
                  code_rate=draw(rng, code_rate, CODE_RATES),
                  cell_id=draw(rng, cell_id, low=0, high=65535, integer=True))
    if params["guard"] not in GUARDS or params["modulation"] not in _MODULATIONS \
            or params["code_rate"] not in CODE_RATES or not 0 <= params["cell_id"] <= 65535:
        raise InputError(f"dvbt: bad parameters {params}: guard one of {', '.join(GUARDS)}, "
                         f"modulation one of {', '.join(_MODULATIONS)}, code_rate one of "
                         f"{', '.join(CODE_RATES)}, cell_id 0..65535")
    nfft, _ = MODES[params["mode"]]
    rate = elementary_rate(params["channel_mhz"])
    cp = nfft // GUARDS[params["guard"]]
    timeline = _timeline(nfft, cp)
    params["offset_s"] = draw(rng, offset_s, low=0.0, high=timeline.period / rate)
    tx = _Transmitter(rng, params["mode"], params["guard"], params["modulation"],
                      params["code_rate"], params["cell_id"])
    iq, active = _ofdm.window(lambda a, m: timeline.render(a, m, tx.grid), rate, samp_rate, n,
                              round(params["offset_s"] * rate))
    return Signal(iq, BANDWIDTHS[(params["mode"], params["channel_mhz"])], active, params)
