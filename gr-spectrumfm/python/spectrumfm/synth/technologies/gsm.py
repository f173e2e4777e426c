"""GSM downlink: GMSK bursts in TDMA frames of 8 timeslots (3GPP TS 45.002, 45.004).

GMSK at 1625/6 = 270.833 ksym/s, BT 0.3, modulation index 0.5, on differentially encoded
bits (45.004 2.3-2.5: a 0 after a 0 is a +67.7 kHz deviation). A timeslot is 156.25 symbol
periods (577 us): the quarter bits are spread the usual way, timeslots 0 and 4 are 157
symbols long and the others 156, so a frame is exactly 1250 symbols (4.615 ms).

Burst formats (45.002 5.2): normal burst = 3 tail + 57 data + 1 stealing flag + 26-bit
training sequence + 1 + 57 + 3 tail; frequency correction burst (FCCH) = 148 zeros, a pure
+67.7 kHz tone; synchronisation burst (SCH) = 3 tail + 39 + 64-bit extended training
sequence + 39 + 3 tail; dummy burst = its fixed 142 bits between tails. Guard periods carry
1s (the modulator's dummy bits).
"""

from __future__ import annotations

import numpy as np

from spectrumfm.synth.core import Signal, draw, register, unit_power
from spectrumfm.synth.technologies._common import (
    at, edges, finish, gfsk_phase, oversampling, require, require_rate, sample_times,
    timeline_length)

SYMBOL_RATE = 1625e3 / 6            # symbols/s (45.004 2.1)
BT, H = 0.3, 0.5
SLOT_SYMBOLS = np.array([157, 156, 156, 156, 157, 156, 156, 156])
USEFUL = 148                        # tail + data + training + tail symbols of a burst
#: Training sequences TSC 0-7 of the normal burst (45.002 table 5.2.3-1, set 1).
TSC = np.array([[int(c) for c in s] for s in (
    "00100101110000100010010111", "00101101110111100010110111",
    "01000011101110100100001110", "01000111101101000100011110",
    "00011010111001000001101011", "01001110101100000100111010",
    "10100111110110001010011111", "11101111000100101110111100")], np.uint8)
#: Extended training sequence of the synchronisation burst (45.002 5.2.5).
SCH_TRAINING = np.array([int(c) for c in
                         "1011100101100010000001000000111100101101010001010111011000011011"],
                        np.uint8)
#: The 142 fixed bits of the dummy burst (45.002 5.2.6).
DUMMY = np.unpackbits(np.frombuffer(bytes.fromhex(
    "FB760A4E09101F1C5C5C574A3339E9F12FA8"), np.uint8))[:142]
FCCH_FRAMES, SCH_FRAMES, IDLE_FRAME = (0, 10, 20, 30, 40), (1, 11, 21, 31, 41), 50
#: 99 % occupied bandwidth of the GMSK signal (Hz), measured on a long BCCH carrier.
BANDWIDTH = 245e3
MIN_RATE = 300e3                    # 1.15 times the bandwidth, rounded up
RAMP = 1.0                          # power ramp of a burst, symbols (45.005 annex B)


def burst_bits(rng: np.random.Generator, fn: np.ndarray, tn: np.ndarray, tsc: int,
               bcch: bool, busy: np.ndarray) -> np.ndarray:
    """The 148 bits of the bursts in frames ``fn``, timeslots ``tn`` (arrays of slots).

    Normal bursts with training sequence ``tsc``; on a BCCH carrier (``bcch``) timeslot 0
    follows the 51-multiframe (FCCH, SCH, BCCH/CCCH, idle frame 50 as a dummy burst) and
    timeslots 1-7 not marked in ``busy`` (bool per timeslot) carry dummy bursts.
    """
    bits = rng.integers(0, 2, (len(fn), USEFUL), np.uint8)
    bits[:, :3] = bits[:, -3:] = 0
    bits[:, 61:87] = TSC[tsc]
    if bcch:
        t51 = np.where(tn == 0, fn % 51, -1)
        bits[np.isin(t51, FCCH_FRAMES)] = 0
        bits[np.isin(t51, SCH_FRAMES), 42:106] = SCH_TRAINING
        bits[(t51 == IDLE_FRAME) | ((tn > 0) & ~busy[tn]), 3:145] = DUMMY
    return bits


def slot_stream(bits: np.ndarray, tn: np.ndarray):
    """Bursts and guard periods laid end to end: ``(bits, useful)``, one entry per symbol;
    ``useful`` marks the 148 burst symbols of each slot (not the guard)."""
    full = np.ones((len(tn), SLOT_SYMBOLS.max()), np.uint8)
    full[:, :USEFUL] = bits
    keep = np.arange(full.shape[1]) < SLOT_SYMBOLS[tn][:, None]
    useful = np.broadcast_to(np.arange(full.shape[1]) < USEFUL, full.shape)
    return full[keep], useful[keep]


def differential(bits: np.ndarray) -> np.ndarray:
    """GMSK symbols +-1 of ``bits`` after differential encoding (45.004 2.3-2.4)."""
    d = bits ^ np.concatenate(([1], bits[:-1]))
    return 1 - 2 * d.astype(np.int8)


@register("technology", "gsm", min_rate=MIN_RATE,
          description="GSM downlink, GMSK 270.833 ksym/s normal/FCCH/SCH bursts in TDMA frames")
def gsm(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
        tsc: int | None = None, busy_slots: int | None = None,
        active_slots: int | None = None) -> Signal:
    """A GSM carrier.

    Args:
        rng: random generator.
        samp_rate: output rate, S/s (at least 300 kS/s).
        n: number of samples.
        burst: False: a BCCH carrier (C0): every timeslot transmitted, constant envelope,
            timeslot 0 on the 51-multiframe with its FCCH and SCH bursts. True: a traffic
            carrier: only ``active_slots`` timeslots of each frame (TCH/F: none in the idle
            frame 25 of the 26-multiframe), ramped on and off in the guard periods.
        tsc: training sequence code 0-7 (the BCC); drawn when None.
        busy_slots: BCCH carrier only: how many of timeslots 1-7 carry traffic (the others
            dummy bursts); drawn from 0-7.
        active_slots: traffic carrier only: how many timeslots are on, 1-8; drawn.

    Returns:
        A :class:`Signal`; ``params`` holds tsc and busy_slots or active_slots. The window
        starts at a random point of the multiframes.
    """
    require_rate(samp_rate, MIN_RATE, "gsm")
    tsc = require(draw(rng, tsc, range(8)), range(8), "gsm tsc")
    # Traffic carrier: which timeslots are on. BCCH carrier: which of 1-7 carry traffic.
    key, value, allowed = (("active_slots", active_slots, range(1, 9)) if burst
                           else ("busy_slots", busy_slots, range(8)))
    count = require(draw(rng, value, allowed), allowed, f"gsm {key}")
    chosen = np.zeros(8, bool)
    chosen[rng.choice(np.arange(0 if burst else 1, 8), count, replace=False)] = True
    m = oversampling(samp_rate, BANDWIDTH)
    u = sample_times(rng, samp_rate, n, SYMBOL_RATE, m)
    length = timeline_length(u)
    skip = int(rng.integers(SLOT_SYMBOLS.max()))      # window start inside the first slot
    slots = int(rng.integers(51 * 26 * 8)) + np.arange((skip + length) // SLOT_SYMBOLS.min() + 2)
    fn, tn = slots // 8, slots % 8
    bits, useful = slot_stream(burst_bits(rng, fn, tn, tsc, not burst, chosen), tn)
    sym = differential(bits)[skip:skip + length]
    phase = gfsk_phase(sym, u, BT, H) + rng.uniform(0, 2 * np.pi)
    x, active = np.exp(1j * phase), None
    if burst:
        on_slot = chosen[tn] & (fn % 26 != 25)
        on = (useful & np.repeat(on_slot, SLOT_SYMBOLS[tn]))[skip:skip + length]
        x = x * edges(on.astype(np.float32), u, RAMP)
        active = at(on, u)
    iq, active = finish(x, active, samp_rate, m, n)
    return Signal(unit_power(iq, active), BANDWIDTH, active, {"tsc": tsc, key: count})
