"""Anomaly classes: each one's signature found with a detector written here (spectral lines,
sweep slopes, pulse envelopes, folded power, cyclic symbol-rate lines)."""

import numpy as np
import pytest

from spectrumfm.errors import InputError
from spectrumfm.synth.anomalies import ANOMALY_CLASSES, ANOMALY_MIN_RATE, anomaly_example
from spectrumfm.synth.impairments import Impairments, impair

RATE = 40e6


def example(cls, n=1 << 14, rate=RATE, seed=0, **params):
    return anomaly_example(np.random.default_rng(seed), rate, n, cls, **params)


def band_power(x, rate, lo, hi):
    """Mean periodogram level between ``lo`` and ``hi`` Hz (power per Hz, relative)."""
    p = np.abs(np.fft.fft(x)) ** 2 / len(x) ** 2
    f = np.fft.fftfreq(len(x), 1 / rate)
    sel = (f >= lo) & (f <= hi)
    return p[sel].sum() / (sel.sum() * rate / len(x))


def test_001_classes_rate_and_bad_input():
    assert ANOMALY_CLASSES == ["normal", "alias-10mhz", "alias-30mhz", "cw-jammer",
                               "chirp-jammer", "pulsed", "spoof"]
    assert ANOMALY_MIN_RATE == 20e6
    with pytest.raises(InputError, match="at least 20 MS/s"):
        example("normal", rate=10e6)
    with pytest.raises(InputError, match="unknown anomaly class 'jammer'"):
        example("jammer")
    with pytest.raises(InputError, match="unknown parameter 'isr'"):
        example("cw-jammer", isr=3)
    with pytest.raises(InputError, match="isr_db"):
        example("cw-jammer", isr_db="loud")
    with pytest.raises(InputError, match="duty"):
        example("pulsed", duty=1.5)
    with pytest.raises(InputError, match="alias-30mhz"):
        example("alias-30mhz", rate=100e6)


@pytest.mark.parametrize("cls", ANOMALY_CLASSES)
def test_002_same_seed_same_bytes_and_levels(cls):
    a, b = example(cls, n=2048, seed=3), example(cls, n=2048, seed=3)
    assert a.iq.dtype == np.complex64 and a.iq.shape == (2048,)
    assert a.iq.tobytes() == b.iq.tobytes() and a.params == b.params
    total = np.mean(np.abs(a.iq) ** 2)
    assert a.params["signal_share"] == pytest.approx(1 / total, rel=1e-3)
    if "isr_db" in a.params:   # primary at unit power, interference on top
        on = a.params.get("duty", 1.0)    # pulsed: ISR while a pulse is on
        assert total == pytest.approx(1 + on * 10 ** (a.params["isr_db"] / 10), rel=0.15)
    assert a.bandwidth == pytest.approx(20e6, rel=0.06)


def test_003_normal_primary_fills_its_20_mhz():
    x = example("normal").iq
    inside = band_power(x, RATE, -9e6, 9e6)
    assert band_power(x, RATE, 11e6, 19e6) < 1e-3 * inside
    assert band_power(x, RATE, -19e6, -11e6) < 1e-3 * inside
    assert np.mean(np.abs(x) ** 2) == pytest.approx(1, rel=1e-4)


def test_004_10_mhz_interferer_raises_power_inside_the_band():
    x = example("alias-10mhz", isr_db=0.0, interferer_hz=3e6).iq
    hit = band_power(x, RATE, -1.5e6, 7.5e6)         # the interferer's 10 MHz
    clear = band_power(x, RATE, -9e6, -2.5e6)        # primary alone
    # primary: 1 over 20 MHz; interferer: 1 over 10 MHz -> three times the level
    assert hit / clear == pytest.approx(3.0, rel=0.2)
    assert band_power(x, RATE, 11e6, 19e6) < 1e-3 * clear


def test_005_30_mhz_interferer_folds_into_the_capture():
    rate = 25e6      # capture +-12.5 MHz; interferer at +12 MHz spans -3 .. +27 MHz
    x = example("alias-30mhz", rate=rate, isr_db=10.0, interferer_hz=12e6).iq
    normal = example("normal", rate=rate).iq
    # -12.5 .. -10.5 MHz: outside the primary and below the interferer's direct span;
    # only its 12.5 .. 27 MHz part, folded down by the rate, lands there.
    folded = band_power(x, rate, -12.4e6, -10.6e6)
    assert folded > 100 * band_power(normal, rate, -12.4e6, -10.6e6)
    # at the level of the interferer's flat top: power 10 over its 24 Msym/s symbol rate
    assert folded == pytest.approx(10 / 24e6, rel=0.15)
    # drawn placements always reach past Nyquist
    for seed in range(10):
        p = example("alias-30mhz", rate=rate, n=256, seed=seed).params
        assert abs(p["interferer_hz"]) + 15e6 >= rate / 2 + 3e6


def test_006_cw_jammer_is_a_spectral_line():
    n, f = 1 << 14, 3e6
    x = example("cw-jammer", n=n, isr_db=0.0, interferer_hz=f).iq
    p = np.abs(np.fft.fft(x)) ** 2
    assert np.fft.fftfreq(n, 1 / RATE)[np.argmax(p)] == pytest.approx(f, abs=RATE / n)
    assert p.max() / p.sum() == pytest.approx(0.5, abs=0.1)      # half the power, one bin


def test_007_chirp_jammer_sweeps_at_its_rate():
    span, period = 16e6, 20e-6
    x = example("chirp-jammer", n=1 << 13, isr_db=30.0, interferer_hz=0.0, sweep_hz=span,
                period_s=period).iq
    inst = np.angle(x[1:] * np.conj(x[:-1])) * RATE / (2 * np.pi)   # jammer dominates
    smooth = np.convolve(inst, np.ones(9) / 9, mode="valid")
    assert np.percentile(smooth, 1) == pytest.approx(-span / 2, abs=1e6)
    assert np.percentile(smooth, 99) == pytest.approx(span / 2, abs=1e6)
    slope = np.median(np.diff(smooth)) * RATE                   # Hz per second
    assert slope == pytest.approx(span / period, rel=0.1)


def test_008_pulsed_interference_has_its_duty_and_period():
    period, duty, n = 10e-6, 0.3, 1 << 13
    x = example("pulsed", n=n, isr_db=20.0, period_s=period, duty=duty).iq
    env = np.convolve(np.abs(x) ** 2, np.ones(16) / 16, mode="same")
    on = env > 50                              # halfway: primary alone ~1, pulses ~101
    assert on.mean() == pytest.approx(duty, abs=0.03)
    lag = round(period * RATE)
    match = np.mean(on[:-lag] == on[lag:])
    assert match > 0.95 and np.mean(on[:-lag // 2] == on[lag // 2:]) < 0.7


def test_009_spoof_has_the_wrong_symbol_rate():
    def symbol_rate_line(x):   # |x|^2 of RRC-shaped QPSK has a line at the symbol rate
        p = np.abs(np.fft.fft(np.abs(x) ** 2 - np.mean(np.abs(x) ** 2)))
        f = np.fft.fftfreq(len(x), 1 / RATE)
        sel = (f > 12e6) & (f < 20e6)
        return f[sel][np.argmax(p[sel])]
    n = 1 << 16
    assert symbol_rate_line(example("normal", n=n).iq) == pytest.approx(16e6, abs=5e3)
    spoof = example("spoof", n=n, rate_error_pct=4.0)
    assert symbol_rate_line(spoof.iq) == pytest.approx(16.64e6, abs=5e3)
    assert spoof.bandwidth == pytest.approx(20.8e6)
    for seed in range(10):
        err = abs(example("spoof", n=64, seed=seed).params["rate_error_pct"])
        assert 2 <= err <= 5


def test_010_snr_is_the_primarys_in_band_snr():
    sig = example("alias-10mhz", n=1 << 15, isr_db=5.0, interferer_hz=-2e6)
    y, _ = impair(sig, np.random.default_rng(1), RATE, Impairments(), 10.0)
    noise = y - sig.iq
    in_band = band_power(noise, RATE, -10e6, 10e6) * 20e6
    assert 10 * np.log10(1.0 / in_band) == pytest.approx(10.0, abs=0.5)   # primary power 1
