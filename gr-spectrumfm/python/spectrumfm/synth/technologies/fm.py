"""Broadcast FM with the stereo multiplex (ITU-R BS.450, BS.643 for RDS; IEC 62106).

The multiplex (MPX) frequency-modulates the carrier with 75 kHz peak deviation:

* L+R audio, 30 Hz-15 kHz, pre-emphasised (50 us in Europe, 75 us in the Americas);
* the 19 kHz pilot at 9 % of the peak deviation (6.75 kHz);
* L-R audio as double-sideband suppressed-carrier on 38 kHz, locked to the pilot;
* optionally RDS: biphase BPSK at 1187.5 bit/s on 57 kHz (3 x pilot), 4 % (3 kHz).

The audio is "music-like": a few notes with decaying harmonics plus partials spread
log-uniformly over the band with a pink (1/f) power slope, each a sinusoid of random phase,
and an L-R part of random stereo width. A broadcast processor's final clipper is modelled by
setting the composite audio's RMS 8 dB below its allowance and clipping at it (about 1 % of
the time), so the peaks reach 75 kHz while pilot and RDS keep their levels.

The audio is evaluated at about 250 kS/s and linearly interpolated (its images fall at
> 235 kHz, 24 dB down at 15 kHz and more below); pilot, subcarriers and the FM phase are
computed at every sample.
"""

from __future__ import annotations

import math

import numpy as np

from spectrumfm.synth.core import Signal, draw, register, unit_power
from spectrumfm.synth.technologies._common import finish, oversampling, require, \
    require_rate, sample_times

DEVIATION = 75e3                    # peak deviation, Hz
PILOT_HZ = 19e3
PILOT_LEVEL, RDS_LEVEL = 0.09, 0.04     # fractions of the peak deviation
RDS_BIT_RATE = PILOT_HZ / 16        # 1187.5 bit/s
AUDIO_BAND = (30.0, 15e3)           # Hz
PREEMPHASIS_US = (50, 75)
AUDIO_RATE = 250e3                  # rate the audio is evaluated at before interpolation
CREST = 2.5                         # composite audio peak (clip level) to RMS, 8 dB
#: 99 % occupied bandwidth (Hz), measured on 0.2 s signals (125-140 kHz, mono the widest;
#: Carson's rule gives 256 kHz for the full multiplex, ITU-R SM.1138).
BANDWIDTH = 135e3
MIN_RATE = 200e3                    # the channel raster, where the multiplex still fits


def partials(rng: np.random.Generator, notes: int = 4, harmonics: int = 8,
             spread: int = 24):
    """Frequencies (Hz) and amplitudes of a music-like sound within :data:`AUDIO_BAND`:
    ``notes`` fundamentals (60 Hz-1 kHz) with ``harmonics`` partials falling as 1/k, and
    ``spread`` partials log-uniform over the band with amplitude ~ f**-0.5 (pink)."""
    f0 = np.exp(rng.uniform(np.log(60), np.log(1000), notes))
    k = np.arange(1, harmonics + 1)
    f_notes = (f0[:, None] * k).ravel()
    a_notes = (rng.uniform(0.5, 1.0, notes)[:, None] / k).ravel()
    f_spread = np.exp(rng.uniform(*np.log(AUDIO_BAND), spread))
    a_spread = 0.3 * np.sqrt(100.0 / f_spread)
    f, a = np.r_[f_notes, f_spread], np.r_[a_notes, a_spread]
    keep = f < AUDIO_BAND[1]
    return f[keep], a[keep]


def audio(rng: np.random.Generator, t0: float, dt: float, count: int, tau: float,
          width: float):
    """Pre-emphasised mid (L+R)/2 and side (L-R)/2 signals at ``count`` times ``t0 + k dt``
    (s), with their variances; the side is ``width`` times weaker. ``tau`` is the
    pre-emphasis time constant, s (H(f) = 1 + j 2 pi f tau)."""
    out = []
    for scale in (1.0, width):
        f, a = partials(rng)
        h = (1 + 2j * np.pi * f * tau) * a * scale * np.exp(1j * rng.uniform(0, 2 * np.pi, len(f)))
        out += [sum_of_tones(f, h, t0, dt, count), 0.5 * float(np.sum(np.abs(h) ** 2))]
    return out


def sum_of_tones(f: np.ndarray, h: np.ndarray, t0: float, dt: float, count: int):
    """``Re(sum_i h_i exp(j 2 pi f_i t))`` at ``t = t0 + k dt``, ``k < count``.

    With ``k = a B + b``, ``exp(j w k dt) = exp(j w a B dt) exp(j w b dt)``: two tables of
    about ``sqrt(count)`` rows and one matrix product replace ``count`` exponentials per tone.
    """
    block = math.isqrt(count) + 1
    fine = np.exp(2j * np.pi * np.outer(np.arange(block) * dt, f))
    coarse = np.exp(2j * np.pi * np.outer(t0 + np.arange(-(-count // block)) * (block * dt), f))
    return np.real((coarse * h) @ fine.T).ravel()[:count]


@register("technology", "fm", min_rate=MIN_RATE,
          description="broadcast FM, stereo multiplex with 19 kHz pilot and RDS, 75 kHz deviation")
def fm(rng: np.random.Generator, samp_rate: float, n: int, *, burst: bool = False,
       stereo: bool | None = None, rds: bool | None = None,
       preemphasis_us: int | None = None) -> Signal:
    """A broadcast FM station; continuous, so ``burst`` changes nothing.

    Args:
        rng: random generator.
        samp_rate: output rate, S/s (at least 200 kS/s).
        n: number of samples.
        burst: ignored (broadcasters transmit all the time).
        stereo: with pilot and L-R subcarrier; drawn (80 % stereo).
        rds: with the RDS subcarrier; drawn (70 %).
        preemphasis_us: 50 or 75; drawn.

    Returns:
        A :class:`Signal` (``active`` None) with ``params`` stereo, rds (0/1) and
        preemphasis_us.
    """
    require_rate(samp_rate, MIN_RATE, "fm")
    stereo = bool(stereo if stereo is not None else rng.uniform() < 0.8)
    rds = bool(rds if rds is not None else rng.uniform() < 0.7)
    tau = require(draw(rng, preemphasis_us, PREEMPHASIS_US), PREEMPHASIS_US,
                  "fm preemphasis_us") * 1e-6
    m = oversampling(samp_rate, BANDWIDTH)
    fs = samp_rate * m
    t = sample_times(rng, samp_rate, n, 1.0, m)
    step = max(1, int(fs // AUDIO_RATE))
    count = len(t) // step + 2
    t_audio = t[0] + np.arange(count) * (step / fs)
    mid, var_mid, side, var_side = audio(rng, t[0], step / fs, count, tau,
                                         rng.uniform(0.2, 0.6) * stereo)
    pilot = np.exp(1j * (2 * np.pi * PILOT_HZ * t + rng.uniform(0, 2 * np.pi)))
    subcarrier = (pilot ** 2).imag
    composite = np.interp(t, t_audio, mid) + np.interp(t, t_audio, side) * subcarrier
    allowance = 1 - PILOT_LEVEL * stereo - RDS_LEVEL * rds
    limit = allowance / CREST / np.sqrt(var_mid + var_side / 2)
    mpx = np.clip(composite * limit, -allowance, allowance) + PILOT_LEVEL * stereo * pilot.imag
    if rds:
        phase = t * RDS_BIT_RATE + rng.uniform()          # bits since an arbitrary origin
        k = phase.astype(np.int64) - int(phase[0])
        biphase = rng.choice((-1.0, 1.0), k[-1] + 1)[k] * np.sin(2 * np.pi * phase)
        mpx += RDS_LEVEL * biphase * (pilot ** 3).imag
    phi = np.cumsum(mpx) * (2 * np.pi * DEVIATION / fs) + rng.uniform(0, 2 * np.pi)
    iq, _ = finish(np.exp(1j * phi), None, samp_rate, m, n)
    params = {"stereo": int(stereo), "rds": int(rds), "preemphasis_us": int(tau * 1e6 + 0.5)}
    return Signal(unit_power(iq), BANDWIDTH, None, params)
