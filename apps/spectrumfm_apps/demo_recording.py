"""Make the demo recording shipped in ``data/demo/``: several emitters and empty spectrum.

    python -m spectrumfm_apps.demo_recording data/demo/demo   # writes demo.sigmf-{meta,data}

A 2-second, 1 MS/s capture centred on 915 MHz, stored as ``ci8`` like an RTL-SDR would
(4 MB), with each emitter's true extent written as a SigMF annotation so the demo can say
what the detector found and missed. The waveforms are simple numpy synthesis with a fixed
seed; the project's labelled generator (``spectrumfm generate``) is where realistic
technology waveforms belong.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

SAMP_RATE = 1_000_000.0
CENTER_FREQ = 915e6
DURATION_S = 2.0
NOISE_RMS = 0.02          # complex noise RMS, full scale = 1 (about 2.5 LSB at 8 bits)
SEED = 20261123


def _tone_shift(x, f_hz, t0_s=0.0):
    n = np.arange(x.size)
    return x * np.exp(2j * np.pi * f_hz * (n / SAMP_RATE + t0_s)).astype(np.complex64)


def _rrc(beta, sps, span):
    """Root-raised-cosine taps (unit energy), ``span`` symbols long."""
    t = np.arange(-span * sps / 2, span * sps / 2 + 1) / sps
    taps = np.empty_like(t)
    for i, ti in enumerate(t):  # a few hundred taps, once: clarity over speed
        if abs(ti) < 1e-9:
            taps[i] = 1 - beta + 4 * beta / np.pi
        elif beta and abs(abs(4 * beta * ti) - 1) < 1e-9:
            taps[i] = beta / np.sqrt(2) * ((1 + 2 / np.pi) * np.sin(np.pi / (4 * beta))
                                           + (1 - 2 / np.pi) * np.cos(np.pi / (4 * beta)))
        else:
            taps[i] = (np.sin(np.pi * ti * (1 - beta)) + 4 * beta * ti * np.cos(np.pi * ti * (1 + beta))) / (
                np.pi * ti * (1 - (4 * beta * ti) ** 2))
    return taps / np.sqrt(np.sum(taps ** 2))


def qpsk(rng, n, sps):
    symbols = (rng.choice([-1, 1], n // sps + 16) + 1j * rng.choice([-1, 1], n // sps + 16)) / np.sqrt(2)
    up = np.zeros(symbols.size * sps, np.complex128)
    up[::sps] = symbols
    return np.convolve(up, _rrc(0.35, sps, 8), mode="same")[:n] * np.sqrt(sps)


def nbfm(rng, n, deviation_hz):
    """Narrowband FM carrying a few audio tones (a voice channel, 12.5 kHz-ish)."""
    t = np.arange(n) / SAMP_RATE
    audio = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (400.0, 1100.0, 2300.0)) / 3
    phase = 2 * np.pi * deviation_hz * np.cumsum(audio) / SAMP_RATE
    return np.exp(1j * phase)


def gfsk_burst(rng, n, sym_rate, h=0.5):
    sps = int(SAMP_RATE // sym_rate)
    bits = rng.integers(0, 2, n // sps + 1) * 2 - 1
    freq = np.repeat(bits, sps)[:n].astype(float)
    gauss = np.exp(-0.5 * (np.arange(-2 * sps, 2 * sps + 1) / (0.5 * sps)) ** 2)
    freq = np.convolve(freq, gauss / gauss.sum(), mode="same")
    return np.exp(1j * np.pi * h * np.cumsum(freq) / sps)


def ofdm(rng, n, n_fft=256, used=40, cp=32):
    """Generic OFDM symbols: QPSK on ``used`` of ``n_fft`` subcarriers (used/n_fft of the rate wide)."""
    n_sym = n // (n_fft + cp) + 1
    grid = np.zeros((n_sym, n_fft), np.complex128)
    k = np.r_[1:used // 2 + 1, n_fft - used // 2:n_fft]
    grid[:, k] = (rng.choice([-1, 1], (n_sym, k.size)) + 1j * rng.choice([-1, 1], (n_sym, k.size))) / np.sqrt(2)
    sym = np.fft.ifft(grid, axis=1) * np.sqrt(n_fft / used * n_fft)
    return np.concatenate([sym[:, -cp:], sym], axis=1).ravel()[:n]


def make_scene():
    """The samples (complex128) and the truth: a list of annotation dicts."""
    rng = np.random.default_rng(SEED)
    n = int(DURATION_S * SAMP_RATE)
    x = (rng.normal(size=n) + 1j * rng.normal(size=n)) * NOISE_RMS / np.sqrt(2)
    truth = []

    def add(sig, start_s, f_hz, bw_hz, label, amp, comment):
        i0 = int(start_s * SAMP_RATE)
        seg = _tone_shift(sig, f_hz, start_s) * amp
        x[i0:i0 + seg.size] += seg
        truth.append({"core:sample_start": i0, "core:sample_count": int(seg.size),
                      "core:freq_lower_edge": CENTER_FREQ + f_hz - bw_hz / 2,
                      "core:freq_upper_edge": CENTER_FREQ + f_hz + bw_hz / 2,
                      "core:label": label, "core:comment": comment})

    add(nbfm(rng, n, 2500.0), 0.0, -300e3, 12.5e3, "nbfm", 0.25, "voice channel, continuous")
    sps = 8
    for t0, dur in ((0.20, 0.70), (1.30, 0.40)):
        add(qpsk(rng, int(dur * SAMP_RATE), sps), t0, 150e3, SAMP_RATE / sps * 1.35, "qpsk", 0.12,
            "125 kBd QPSK burst, RRC 0.35")
    add(ofdm(rng, int(0.6 * SAMP_RATE)), 1.00, -120e3, 41 / 256 * SAMP_RATE, "ofdm", 0.08,
        "OFDM block, 256-point FFT, 40 used subcarriers")
    for i, f in enumerate((330e3, 390e3, 450e3, 360e3, 420e3)):
        add(gfsk_burst(rng, int(0.03 * SAMP_RATE), 50e3), 0.15 + 0.35 * i, f, 60e3, "gfsk", 0.2,
            "50 kBd GFSK hop, 30 ms")
    truth.sort(key=lambda a: a["core:sample_start"])
    return x, truth


def write_sigmf(base: Path, x: np.ndarray, truth: list[dict]) -> None:
    """Quantise to ci8 like an RTL-SDR front end and write SigMF (meta via the sigmf package)."""
    from sigmf import SigMFFile

    iq = np.empty(2 * x.size, np.int8)
    iq[0::2] = np.clip(np.round(x.real * 128), -128, 127)
    iq[1::2] = np.clip(np.round(x.imag * 128), -128, 127)
    base.parent.mkdir(parents=True, exist_ok=True)
    data_path = base.with_name(base.name + ".sigmf-data")
    iq.tofile(data_path)
    meta = SigMFFile(global_info={
        "core:datatype": "ci8",
        "core:sample_rate": SAMP_RATE,
        "core:description": "gr-spectrumfm demo: NBFM voice, QPSK bursts, an OFDM block and "
                                   "GFSK hops in 1 MHz at 915 MHz, empty spectrum between them",
        "core:author": "gr-spectrumfm",
        "core:recorder": "spectrumfm_apps.demo_recording (synthetic, seed %d)" % SEED,
        "core:license": "CC0-1.0",
    })
    meta.set_data_file(str(data_path))
    meta.add_capture(0, metadata={"core:frequency": CENTER_FREQ,
                                  "core:datetime": "2026-11-23T12:00:00.000000Z"})
    for a in truth:
        meta.add_annotation(a["core:sample_start"], a["core:sample_count"],
                            metadata={k: v for k, v in a.items()
                                      if k not in ("core:sample_start", "core:sample_count")})
    meta.validate()
    base.with_name(base.name + ".sigmf-meta").write_text(meta.dumps(pretty=True) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="output path without extension, e.g. data/demo/demo")
    args = parser.parse_args(argv)
    x, truth = make_scene()
    write_sigmf(args.base, x, truth)
    print(f"wrote {args.base}.sigmf-meta/.sigmf-data: {x.size} samples, {len(truth)} emissions,"
          f" {datetime.timedelta(seconds=DURATION_S)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
