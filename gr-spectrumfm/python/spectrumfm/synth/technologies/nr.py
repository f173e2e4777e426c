"""5G NR downlink (3GPP TS 38.211, FR1), 15 and 30 kHz subcarrier spacing, normal CP.

A clean numpy implementation of the sequences of TS 38.211 (no NR library: neoradium and
py3gpp would add a heavy dependency for a few dozen lines). Built at the carrier's native rate
(FFT size x subcarrier spacing):

* numerology (4.2, 5.3.1): 14-symbol slots of 1 ms (15 kHz) or 0.5 ms (30 kHz); cyclic prefix
  ``144 N/2048`` samples, ``16 x 2^mu x N/2048`` more for the first symbol of each 0.5 ms;
* SS/PBCH block (7.4.3): 4 symbols x 240 subcarriers, ``ssb_offset_rb`` resource blocks above
  the carrier's lowest subcarrier: PSS (7.4.2.2, length-127 m-sequence from N_ID_2) on
  subcarriers 56..182 of symbol 0; SSS (7.4.2.3, product of two m-sequences from N_ID_1 and
  N_ID_2) on 56..182 of symbol 2; PBCH (QPSK) and its DMRS (7.4.1.4, every 4th subcarrier
  shifted by ``N_cell mod 4``, Gold sequence with the SSB index) on symbols 1..3;
* SSB bursts every 20 ms in the first half frame (TS 38.213 4.1): case A at 15 kHz, first
  symbols {2, 8} + 14 n, n = 0, 1 (L = 4); case C at 30 kHz, n = 0..3 (L = 8); an SSB whose
  symbols are not all downlink in the TDD pattern is not sent;
* PDCCH: the first ``coreset_symbols`` symbols of each slot on CCEs (6 resource blocks) of a
  CORESET over the lowest 48 resource blocks, QPSK with DMRS on subcarriers 1, 5, 9 of each
  resource block (7.4.1.3);
* PDSCH: resource-block groups (TS 38.214 5.1.2.2.1, configuration 1) scheduled with
  probability ``load``, QPSK..256QAM, DMRS type 1 on even subcarriers at symbol 2 and the
  additional positions of Table 7.4.1.1.2-3 (``dmrs_add_pos``), Gold sequence of 7.4.1.1.1;
* TDD patterns ``DDDSU`` and ``DDDDDDDSUU`` (special slot: 10 downlink, 2 guard, 2 uplink
  symbols) or ``FDD``.

Simplified: PBCH, PDCCH and PDSCH carry random constellation points (no coding, no real MIB
or DCI); one layer, one beam, equal power for all resource elements; point A is taken at the
carrier's lowest subcarrier (k_SSB = 0); no CSI-RS, TRS or PT-RS. With ``burst=False`` every
slot is a downlink slot, so an example is never silent; with ``burst=True`` the uplink slots
and the guard and uplink symbols of special slots are silent (a downlink receiver's view).
"""

from __future__ import annotations

import functools

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.synth.core import Signal, draw, register
from spectrumfm.synth.technologies import _ofdm

#: (subcarrier spacing kHz, channel MHz) -> (resource blocks, FFT size); resource blocks
#: from TS 38.101-1 Table 5.3.2-1.
CARRIERS = {(15, 5): (25, 512), (15, 10): (52, 1024), (15, 15): (79, 1536),
            (15, 20): (106, 2048), (15, 40): (216, 4096), (30, 10): (24, 512),
            (30, 15): (38, 768), (30, 20): (51, 1024), (30, 40): (106, 2048),
            (30, 100): (273, 4096)}
#: Occupied bandwidth (Hz): 12 subcarriers per resource block.
BANDWIDTHS = {key: 12 * rb * key[0] * 1e3 for key, (rb, _) in CARRIERS.items()}
_SSB_FIRST = {15: (2, 8, 16, 22), 30: (2, 8, 16, 22, 30, 36, 44, 50)}
_PATTERNS = ("DDDSU", "DDDDDDDSUU", "FDD")
_S_DL = 10   # downlink symbols of a special slot
_DMRS = {14: ((2,), (2, 11), (2, 7, 11)), _S_DL: ((2,), (2, 9), (2, 6, 9))}
_MODULATIONS = ("qpsk", "16qam", "64qam", "256qam", "mixed")


def _rbg_size(n_rb: int) -> int:
    return 2 if n_rb <= 36 else 4 if n_rb <= 72 else 8 if n_rb <= 144 else 16


@functools.lru_cache(maxsize=16)
def _timeline(nfft: int, mu: int) -> _ofdm.Timeline:
    """The 20 ms SSB period: 280 x 2^mu symbols."""
    s = np.arange(280 << mu)
    cp = (144 + np.where(s % (7 << mu) == 0, 16 << mu, 0)) * nfft // 2048
    return _ofdm.Timeline(nfft, cp)


@functools.lru_cache(maxsize=1)
def _m_sequences() -> tuple[np.ndarray, ...]:
    """x of the PSS, x0 and x1 of the SSS (38.211 7.4.2.2-3), length 127."""
    return (_ofdm.msequence((0, 4), [0, 1, 1, 0, 1, 1, 1], 127),
            _ofdm.msequence((0, 4), [1, 0, 0, 0, 0, 0, 0], 127),
            _ofdm.msequence((0, 1), [1, 0, 0, 0, 0, 0, 0], 127))


def pss(n_id_2: int) -> np.ndarray:
    """``d_PSS(0..126)`` (38.211 7.4.2.2.1)."""
    x = _m_sequences()[0].astype(np.float32)
    return 1 - 2 * x[(np.arange(127) + 43 * n_id_2) % 127]


def sss(n_id_1: int, n_id_2: int) -> np.ndarray:
    """``d_SSS(0..126)`` (38.211 7.4.2.3.1)."""
    _, x0, x1 = (x.astype(np.float32) for x in _m_sequences())
    m0 = 15 * (n_id_1 // 112) + 5 * n_id_2
    m1 = n_id_1 % 112
    n = np.arange(127)
    return (1 - 2 * x0[(n + m0) % 127]) * (1 - 2 * x1[(n + m1) % 127])


def _dmrs_c_init(n_s: int, l: int, n_id: int) -> int:
    """PDSCH and PDCCH DMRS (38.211 7.4.1.1.1, 7.4.1.3.1), n_SCID = 0."""
    return (2 ** 17 * (14 * n_s + l + 1) * (2 * n_id + 1) + 2 * n_id) % 2 ** 31


@functools.lru_cache(maxsize=64)
def _ssb_static(cell_id: int, i_ssb: int) -> tuple[np.ndarray, np.ndarray]:
    """The SS/PBCH block ``(4, 240)`` without its PBCH data, and where the PBCH data goes."""
    block = np.zeros((4, 240), np.complex64)
    block[0, 56:183] = pss(cell_id % 3)
    block[2, 56:183] = sss(cell_id // 3, cell_id % 3)
    k = np.arange(240)
    pbch = np.zeros((4, 240), bool)
    pbch[1] = pbch[3] = True
    pbch[2] = (k < 48) | (k >= 192)
    dmrs = pbch & (k % 4 == cell_id % 4)
    c_init = (2 ** 11 * (i_ssb + 1) * (cell_id // 4 + 1) + 2 ** 6 * (i_ssb + 1)
              + cell_id % 4)
    block[dmrs] = _ofdm.qpsk_from_bits(_ofdm.gold(c_init, 288))   # k first, then l
    for a in (block, pbch):
        a.flags.writeable = False
    return block, pbch & ~dmrs


class _Carrier:
    """One carrier's resource grid, drawn slot by slot as the window reaches it."""

    def __init__(self, rng, scs: int, n_rb: int, nfft: int, cell_id: int, pattern: str,
                 load: float, modulation: str, ssb_offset_rb: int, coreset_symbols: int,
                 dmrs_add_pos: int):
        self.rng, self.n_rb, self.nfft, self.cell_id = rng, n_rb, nfft, cell_id
        self.mu, self.pattern, self.load, self.modulation = scs // 30, pattern, load, modulation
        self.coreset, self.dmrs_add_pos = coreset_symbols, dmrs_add_pos
        self.n_sc = 12 * n_rb
        self.k = np.arange(self.n_sc)
        self.bins = (self.k - self.n_sc // 2) % nfft
        self.ssb_k = 12 * ssb_offset_rb
        self.n_cce = min(n_rb, 48) // 6
        self.ssb = {}       # symbol of the 20 ms period -> (SSB index, symbol of the block)
        for i, first in enumerate(_SSB_FIRST[scs]):
            if all(self._downlink(first + j) for j in range(4)):
                self.ssb.update({first + j: (i, j) for j in range(4)})
        self._current = None

    def _downlink(self, g: int) -> bool:
        kind = self.pattern[(g // 14) % len(self.pattern)]
        return kind == "D" or (kind == "S" and g % 14 < _S_DL)

    def _slot(self, i: int):
        """Modulation order per subcarrier (0 = no PDSCH) and PDCCH subcarriers of slot ``i``
        (slots come in increasing order, so only the current one is kept)."""
        if self._current is None or self._current[0] != i:
            rng = self.rng
            rb = _ofdm.rbg_mask(rng, self.n_rb, _rbg_size(self.n_rb), self.load, True)
            if self.modulation == "mixed":
                order = rng.choice([4, 16, 64, 256], self.n_rb)
            else:
                order = np.full(self.n_rb, _ofdm.ORDERS[self.modulation])
            cce = _ofdm.rbg_mask(rng, 6 * self.n_cce, 6, self.load, True)
            pdcch = np.zeros(self.n_sc, bool)
            pdcch[:72 * self.n_cce] = np.repeat(cce, 12)
            self._current = (i, np.repeat(order * rb, 12), pdcch)
        return self._current[1:]

    def _symbol(self, g: int) -> np.ndarray:
        """Resource elements ``(12 n_rb,)`` of downlink symbol ``g``."""
        rng, slot, l = self.rng, g // 14, g % 14
        n_s = slot % (10 << self.mu)
        order, pdcch = self._slot(slot)
        re = np.zeros(self.n_sc, np.complex64)
        if l < self.coreset:
            re[pdcch] = _ofdm.qam(rng, 4, int(pdcch.sum()))
            dm = pdcch & (self.k % 4 == 1)
            r = _ofdm.qpsk_from_bits(_ofdm.gold(_dmrs_c_init(n_s, l, self.cell_id),
                                                6 * self.n_rb))
            re[dm] = r[(self.k[dm] // 12) * 3 + self.k[dm] % 12 // 4]
        elif l in _DMRS[14 if self._downlink(slot * 14 + 13) else _S_DL][self.dmrs_add_pos]:
            # PDSCH duration: the whole slot, or the downlink part of a special slot
            dm = (order > 0) & (self.k % 2 == 0)
            r = _ofdm.qpsk_from_bits(_ofdm.gold(_dmrs_c_init(n_s, l, self.cell_id),
                                                12 * self.n_rb))
            re[dm] = r[self.k[dm] // 2]
        else:
            on = order > 0
            re[on] = _ofdm.qam(rng, order[on], int(on.sum()))
        where = self.ssb.get(g % (280 << self.mu))
        if where is not None:
            block, data = _ssb_static(self.cell_id, where[0])
            row = block[where[1]].copy()
            row[data[where[1]]] = _ofdm.qam(rng, 4, int(data[where[1]].sum()))
            re[self.ssb_k:self.ssb_k + 240] = row
        return re

    def grid(self, g: np.ndarray):
        """FFT rows and downlink flags of global symbols ``g`` (see :meth:`Timeline.render`)."""
        rows = np.zeros((g.size, self.nfft), np.complex64)
        on = np.array([self._downlink(int(gi)) for gi in g])
        for i in np.flatnonzero(on):
            rows[i, self.bins] = self._symbol(int(g[i]))
        return rows, on


@register("technology", "nr", min_rate=min(BANDWIDTHS.values()),
          description="5G NR downlink, 15/30 kHz, 5-100 MHz (SS/PBCH, PDCCH, PDSCH, TDD)")
def nr(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
       scs_khz: int | None = None, bandwidth_mhz: int | None = None,
       cell_id: int | None = None, tdd: str | None = None, load: float | None = None,
       modulation: str | None = None, ssb_offset_rb: int | None = None,
       coreset_symbols: int | None = None, dmrs_add_pos: int | None = None,
       offset_s: float | None = None) -> Signal:
    """A 5G NR downlink carrier centred at 0 Hz.

    Args:
        rng: the random generator.
        samp_rate: output rate in Hz, at least the occupied bandwidth
            (``12 N_RB x SCS``: 4.5 MHz for 5 MHz at 15 kHz .. 98.28 MHz for 100 MHz).
        n: samples wanted.
        burst: True: the TDD pattern's uplink slots and the guard and uplink symbols of
            special slots are silent; False: every slot carries downlink.
        scs_khz: subcarrier spacing, 15 or 30.
        bandwidth_mhz: channel bandwidth: 5, 10, 15, 20, 40 (15 kHz) or 10, 15, 20, 40, 100
            (30 kHz); drawn with ``scs_khz`` among the carriers that fit ``samp_rate``.
        cell_id: physical cell identity 0..1007 (N_ID_1 = cell_id // 3, N_ID_2 = cell_id % 3).
        tdd: slot pattern ``DDDSU``, ``DDDDDDDSUU`` or ``FDD`` (used when ``burst``).
        load: probability that a resource-block group carries PDSCH in a slot, 0..1 (drawn in
            0.1..1; at least one group and one CCE per slot).
        modulation: PDSCH constellation, ``qpsk``, ``16qam``, ``64qam``, ``256qam`` or
            ``mixed`` (one drawn per resource block and slot).
        ssb_offset_rb: the SS/PBCH block's lowest resource block, 0..N_RB - 20.
        coreset_symbols: PDCCH symbols at the start of each slot, 1 or 2.
        dmrs_add_pos: PDSCH DMRS additional positions, 0..2 (dmrs-AdditionalPosition).
        offset_s: where the window starts in the 20 ms SSB period, seconds.

    Returns:
        the :class:`Signal`; ``active`` marks the downlink symbols when ``burst``.
    """
    variant = _ofdm.pick(rng, "nr", BANDWIDTHS,
                         {"scs_khz": scs_khz, "bandwidth_mhz": bandwidth_mhz}, samp_rate)
    scs, mhz = variant["scs_khz"], variant["bandwidth_mhz"]
    n_rb, nfft = CARRIERS[(scs, mhz)]
    params = dict(variant, cell_id=draw(rng, cell_id, low=0, high=1007, integer=True),
                  tdd=draw(rng, tdd, _PATTERNS), load=draw(rng, load, low=0.1, high=1.0),
                  modulation=draw(rng, modulation, _MODULATIONS),
                  ssb_offset_rb=draw(rng, ssb_offset_rb, low=0, high=n_rb - 20, integer=True),
                  coreset_symbols=draw(rng, coreset_symbols, (1, 2)),
                  dmrs_add_pos=draw(rng, dmrs_add_pos, (0, 1, 2)),
                  offset_s=draw(rng, offset_s, low=0.0, high=0.02))
    _check(params, n_rb)
    pattern = params["tdd"] if burst and params["tdd"] != "FDD" else "D"
    carrier = _Carrier(rng, scs, n_rb, nfft, params["cell_id"], pattern, params["load"],
                       params["modulation"], params["ssb_offset_rb"],
                       params["coreset_symbols"], params["dmrs_add_pos"])
    rate = nfft * scs * 1e3
    timeline = _timeline(nfft, scs // 30)
    iq, active = _ofdm.window(lambda a, m: timeline.render(a, m, carrier.grid), rate,
                              samp_rate, n, round(params["offset_s"] * rate))
    return Signal(iq, BANDWIDTHS[(scs, mhz)], active, params)


def _check(p: dict, n_rb: int) -> None:
    bad = [f"{k}={p[k]!r}" for k, ok in (
        ("cell_id", 0 <= p["cell_id"] <= 1007), ("tdd", p["tdd"] in _PATTERNS),
        ("load", 0 <= p["load"] <= 1), ("modulation", p["modulation"] in _MODULATIONS),
        ("ssb_offset_rb", 0 <= p["ssb_offset_rb"] <= n_rb - 20),
        ("coreset_symbols", p["coreset_symbols"] in (1, 2)),
        ("dmrs_add_pos", p["dmrs_add_pos"] in (0, 1, 2))) if not ok]
    if bad:
        raise InputError(f"nr: bad parameter {', '.join(bad)} (see spectrumfm.synth."
                         f"technologies.nr.nr for the ranges)")
