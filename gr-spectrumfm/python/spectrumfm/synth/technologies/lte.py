"""LTE downlink (E-UTRA FDD, 3GPP TS 36.211), normal cyclic prefix.

Built at the channel's native rate (FFT size x 15 kHz: 1.92 .. 30.72 MS/s) from the
physical signals of TS 36.211:

* frame structure (4.1, 6.12): 10 ms frames of 20 slots of 7 OFDM symbols, cyclic prefix
  160 samples for the first symbol of a slot and 144 for the others at 2048-point FFT, scaled
  to the channel's FFT size; the DC subcarrier is not transmitted;
* PSS (6.11.1): Zadoff-Chu root 25, 29, 34 for N_ID_2 = 0, 1, 2 on the 62 subcarriers around
  DC (5 reserved each side), last symbol of slots 0 and 10;
* SSS (6.11.2): two interleaved length-31 m-sequences indexed by m0, m1 (from N_ID_1),
  scrambled by c0, c1 (N_ID_2) and z1 (m0, m1), different in subframes 0 and 5, in the
  symbol before the PSS;
* cell-specific reference signals (6.10.1): QPSK of the Gold sequence with
  ``c_init = 2^10 (7 (n_s + 1) + l + 1)(2 N_cell + 1) + 2 N_cell + 1``, every 6th subcarrier
  shifted by ``N_cell mod 6``, symbols 0 and 4 of every slot; port 1 (when two ports) 3
  subcarriers further;
* PBCH (6.6.4): QPSK on the central 72 subcarriers, symbols 0..3 of slot 1, leaving the
  reference-signal positions of 4 ports free;
* control region (PCFICH, PDCCH, PHICH, 6.7-6.9): the first 1..3 symbols of each subframe;
* PDSCH: per subframe, resource-block groups (allocation type 0, group size from
  TS 36.213 Table 7.1.6.1-1) scheduled with probability ``load``, QPSK, 16QAM or 64QAM.

Simplified: control and data resource elements carry random constellation points (no coding,
no real PCFICH/PHICH/PDCCH mapping, the control region fully loaded); with two ports both
ports' reference signals are present but data is one constellation point per resource element
(transmit diversity as seen through one flat channel is not modelled); all resource elements
have the same power; no MBSFN subframes, PRS or CSI-RS. The downlink is continuous, so
``burst`` changes nothing.
"""

from __future__ import annotations

import functools

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.synth.core import Signal, draw, register
from spectrumfm.synth.technologies import _ofdm

SCS = 15e3
#: Channel bandwidth (MHz) -> (resource blocks, FFT size), TS 36.104 Table 5.6-1.
CHANNELS = {1.4: (6, 128), 3: (15, 256), 5: (25, 512), 10: (50, 1024), 15: (75, 1536),
            20: (100, 2048)}
#: Occupied bandwidth (Hz): 12 subcarriers per resource block and the empty DC one.
BANDWIDTHS = {(mhz,): (12 * rb + 1) * SCS for mhz, (rb, _) in CHANNELS.items()}
_MODULATIONS = ("qpsk", "16qam", "64qam", "mixed")
_N_RB_MAX = 110


def _rbg_size(n_rb: int) -> int:
    return 1 if n_rb <= 10 else 2 if n_rb <= 26 else 3 if n_rb <= 63 else 4


@functools.lru_cache(maxsize=8)
def _timeline(nfft: int) -> _ofdm.Timeline:
    slot = np.array([160] + [144] * 6) * nfft // 2048
    return _ofdm.Timeline(nfft, np.tile(slot, 20))


@functools.lru_cache(maxsize=3)
def pss(n_id_2: int) -> np.ndarray:
    """The 62 PSS values ``d_u(0..61)`` (36.211 6.11.1.1)."""
    u = (25, 29, 34)[n_id_2]
    n = np.arange(62)
    m = np.where(n < 31, n * (n + 1), (n + 1) * (n + 2))
    return np.exp(-1j * np.pi * u * m / 63).astype(np.complex64)


@functools.lru_cache(maxsize=1)
def _sss_sequences() -> tuple[np.ndarray, ...]:
    """s~, c~, z~ of 36.211 6.11.2.1: x(i+5) from taps (0, 2), (0, 3), (0, 1, 2, 4)."""
    return tuple(1 - 2 * _ofdm.msequence(taps, [0, 0, 0, 0, 1], 31).astype(np.int8)
                 for taps in ((0, 2), (0, 3), (0, 1, 2, 4)))


@functools.lru_cache(maxsize=1024)
def sss(n_id_1: int, n_id_2: int, subframe: int) -> np.ndarray:
    """The 62 SSS values ``d(0..61)`` of subframe 0 or 5 (36.211 6.11.2.1)."""
    q1 = n_id_1 // 30
    q = (n_id_1 + q1 * (q1 + 1) // 2) // 30
    m_prime = n_id_1 + q * (q + 1) // 2
    m0 = m_prime % 31
    m1 = (m0 + m_prime // 31 + 1) % 31
    s_t, c_t, z_t = _sss_sequences()
    n = np.arange(31)
    s0, s1 = s_t[(n + m0) % 31], s_t[(n + m1) % 31]
    c0, c1 = c_t[(n + n_id_2) % 31], c_t[(n + n_id_2 + 3) % 31]
    z0, z1 = z_t[(n + m0 % 8) % 31], z_t[(n + m1 % 8) % 31]
    d = np.empty(62, np.complex64)
    if subframe == 0:
        d[0::2], d[1::2] = s0 * c0, s1 * c1 * z0
    else:
        d[0::2], d[1::2] = s1 * c0, s0 * c1 * z1
    return d


def crs(n_s: int, l: int, cell_id: int, n_rb: int) -> np.ndarray:
    """The ``2 n_rb`` reference-signal values of slot ``n_s``, symbol ``l`` (36.211 6.10.1.1)."""
    c_init = 2 ** 10 * (7 * (n_s + 1) + l + 1) * (2 * cell_id + 1) + 2 * cell_id + 1
    r = _ofdm.qpsk_from_bits(_ofdm.gold(c_init, 4 * _N_RB_MAX))
    return r[_N_RB_MAX - n_rb:_N_RB_MAX + n_rb]


class _Downlink:
    """One cell's resource grid, drawn subframe by subframe as the window reaches it."""

    def __init__(self, rng, n_rb: int, nfft: int, cell_id: int, ports: int, load: float,
                 modulation: str):
        self.rng, self.n_rb, self.nfft, self.cell_id = rng, n_rb, nfft, cell_id
        self.ports, self.load, self.modulation = ports, load, modulation
        self.n_sc = 12 * n_rb
        k = np.arange(self.n_sc)
        self.bins = (k - self.n_sc // 2 + (k >= self.n_sc // 2)) % nfft   # DC left out
        self.centre = self.n_sc // 2 - 36                                 # central 6 RB
        self.v_shift = cell_id % 6
        self.sync = {sf: (sss(cell_id // 3, cell_id % 3, sf), pss(cell_id % 3)) for sf in (0, 5)}
        self._current = None

    def _subframe(self, i: int):
        """Modulation order per subcarrier (0 = not scheduled) and CFI of subframe ``i``
        (subframes come in increasing order, so only the current one is kept)."""
        if self._current is None or self._current[0] != i:
            rb = _ofdm.rbg_mask(self.rng, self.n_rb, _rbg_size(self.n_rb), self.load)
            if self.modulation == "mixed":
                order = self.rng.choice([4, 16, 64], self.n_rb)
            else:
                order = np.full(self.n_rb, _ofdm.ORDERS[self.modulation])
            cfi = int(self.rng.integers(1, 4))
            self._current = (i, np.repeat(order * rb, 12), cfi)
        return self._current[1:]

    def _symbol(self, g: int) -> np.ndarray:
        """Resource elements ``(12 n_rb,)`` of global symbol ``g``."""
        rng, s = self.rng, g % 140
        n_s, l = divmod(s, 7)
        order, cfi = self._subframe(g // 14)
        if n_s % 2 == 0 and l < cfi:
            re = _ofdm.qam(rng, 4, self.n_sc)
        else:
            re = np.zeros(self.n_sc, np.complex64)
            on = order > 0
            re[on] = _ofdm.qam(rng, order[on], int(on.sum()))
        mid = re[self.centre:self.centre + 72]
        if n_s in (0, 10) and l >= 5:
            mid[:] = 0
            mid[5:67] = self.sync[n_s // 2][l - 5]
        elif n_s == 1 and l < 4:
            mid[:] = _ofdm.qam(rng, 4, 72)
            if l < 2:
                mid[self.v_shift % 3::3] = 0
        if l in (0, 4):
            r = crs(n_s, l, self.cell_id, self.n_rb)
            for v in (0, 3)[:self.ports]:
                re[(v + (3 if l == 4 else 0) + self.v_shift) % 6::6] = r
        return re

    def grid(self, g: np.ndarray):
        """FFT rows of global symbols ``g``, all on (see :meth:`Timeline.render`)."""
        rows = np.zeros((g.size, self.nfft), np.complex64)
        for i, gi in enumerate(g):
            rows[i, self.bins] = self._symbol(int(gi))
        return rows, np.ones(g.size, bool)


@register("technology", "lte", min_rate=min(BANDWIDTHS.values()),
          description="LTE FDD downlink, 1.4-20 MHz (PSS/SSS, CRS, PBCH, PDCCH, PDSCH)")
def lte(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
        bandwidth_mhz: float | None = None, cell_id: int | None = None,
        ports: int | None = None, load: float | None = None, modulation: str | None = None,
        offset_s: float | None = None) -> Signal:
    """An LTE downlink carrier centred at 0 Hz.

    Args:
        rng: the random generator.
        samp_rate: output rate in Hz, at least the occupied bandwidth of the channel
            (1.095 MHz for 1.4 MHz .. 18.015 MHz for 20 MHz).
        n: samples wanted.
        burst: no effect (the downlink never stops).
        bandwidth_mhz: 1.4, 3, 5, 10, 15 or 20; drawn among those that fit ``samp_rate``.
        cell_id: physical cell identity 0..503 (N_ID_1 = cell_id // 3, N_ID_2 = cell_id % 3).
        ports: cell-specific reference-signal ports, 1 or 2.
        load: probability that a resource-block group carries PDSCH in a subframe, 0..1
            (drawn in 0.1..1).
        modulation: PDSCH constellation, ``qpsk``, ``16qam``, ``64qam`` or ``mixed`` (one
            drawn per resource block and subframe, as for several users).
        offset_s: where the window starts in the 10 ms radio frame, seconds.

    Returns:
        the :class:`Signal`; ``bandwidth`` is ``(12 N_RB + 1) x 15 kHz``.
    """
    mhz = _ofdm.pick(rng, "lte", BANDWIDTHS, {"bandwidth_mhz": bandwidth_mhz},
                     samp_rate)["bandwidth_mhz"]
    n_rb, nfft = CHANNELS[mhz]
    cell_id = draw(rng, cell_id, low=0, high=503, integer=True)
    ports = draw(rng, ports, (1, 2))
    load = draw(rng, load, low=0.1, high=1.0)
    modulation = draw(rng, modulation, _MODULATIONS)
    if not 0 <= cell_id <= 503 or ports not in (1, 2) or not 0 <= load <= 1 \
            or modulation not in _MODULATIONS:
        raise InputError(f"lte: cell_id={cell_id} ports={ports} load={load} "
                         f"modulation={modulation!r}: cell_id is 0..503, ports 1 or 2, "
                         f"load 0..1, modulation one of {', '.join(_MODULATIONS)}")
    offset_s = draw(rng, offset_s, low=0.0, high=0.01)
    rate = nfft * SCS
    cell = _Downlink(rng, n_rb, nfft, cell_id, ports, load, modulation)
    timeline = _timeline(nfft)
    iq, active = _ofdm.window(lambda a, m: timeline.render(a, m, cell.grid), rate, samp_rate,
                              n, round(offset_s * rate))
    params = {"bandwidth_mhz": mhz, "cell_id": cell_id, "ports": ports, "load": load,
              "modulation": modulation, "offset_s": offset_s}
    return Signal(iq, BANDWIDTHS[(mhz,)], active, params)
