"""Impairments: each one off leaves the samples bit for bit, each one on does what it says,
measured here with periodograms, phase slopes and averaged impulse responses."""

import dataclasses
import math

import numpy as np
import pytest

from spectrumfm.errors import InputError
from spectrumfm.synth import core, modulations  # noqa: F401  (registers the modulations)
from spectrumfm.synth.impairments import (PARAM_KEYS, Impairments, add_awgn, apply_channel,
                                          apply_receiver, impair)

RATE = 1e6


def rng(seed=0):
    return np.random.default_rng(seed)


def tone(f, n, rate=RATE):
    return np.exp(2j * np.pi * f / rate * np.arange(n)).astype(np.complex64)


def qpsk(n, sps=8, seed=0):
    return core._REGISTRY[("modulation", "qpsk")].generate(rng(seed), RATE, n, sps=sps,
                                                          rolloff=0.35)


def peak_hz(x, rate=RATE):
    return np.fft.fftfreq(len(x), 1 / rate)[np.argmax(np.abs(np.fft.fft(x)))]


def mean_freq_hz(x, rate=RATE):
    """Frequency from the mean phase step (a tone's, or a signal's centroid)."""
    return np.angle(np.vdot(x[:-1], x[1:])) * rate / (2 * np.pi)


def test_001_all_off_is_bit_identical_and_draws_nothing():
    x = qpsk(4096).iq
    for imp in (Impairments(), Impairments.from_dict({}), Impairments.from_dict(None)):
        r = rng(1)
        state = r.bit_generator.state
        y, used = apply_channel(x, r, RATE, imp)
        z, rx = apply_receiver(y, r, imp)
        assert z.tobytes() == x.tobytes() and r.bit_generator.state == state
        assert used["multipath"] == 0 and used["cfo_hz"] == 0 and math.isnan(rx["clip_db"])


@pytest.mark.parametrize("key,off", [("cfo_hz", 0), ("phase_deg", [0, 0]), ("sro_ppm", 0),
                                     ("timing_offset", 0), ("phase_noise", 0),
                                     ("multipath", None), ("iq_gain_db", 0),
                                     ("iq_phase_deg", 0), ("dc_offset_db", None),
                                     ("gain_change_db", 0), ("clip_db", None)])
def test_002_each_setting_at_its_off_value_is_bit_identical(key, off):
    x = qpsk(1024).iq
    imp = Impairments.from_dict({key: off})
    y, _ = apply_receiver(apply_channel(x, rng(), RATE, imp)[0], rng(), imp)
    assert y.tobytes() == x.tobytes()


@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 10.0, 25.0])
@pytest.mark.parametrize("sps", [2, 8])
def test_003_in_band_snr_measured_from_the_noise_alone(snr_db, sps):
    sig = qpsk(1 << 16, sps=sps)
    y = add_awgn(sig.iq, snr_db, sig.bandwidth, RATE, rng(2))
    noise = (y - sig.iq).astype(np.complex128)
    f = np.fft.fftfreq(len(noise), 1 / RATE)
    p = np.abs(np.fft.fft(noise)) ** 2 / len(noise) ** 2        # power per bin
    in_band = p[np.abs(f) <= sig.bandwidth / 2].sum()
    measured = 10 * np.log10(np.mean(np.abs(sig.iq) ** 2) / in_band)
    assert measured == pytest.approx(snr_db, abs=1.0)
    assert y.dtype == np.complex64


def test_004_snr_over_active_samples_and_signal_share():
    x = qpsk(1 << 15).iq
    active = np.zeros(len(x), bool)
    active[: len(x) // 4] = True
    burst = np.where(active, x, 0).astype(np.complex64)
    y = add_awgn(burst, 0.0, RATE, RATE, rng(3), active=active)   # bandwidth = rate: plain SNR
    noise_power = np.mean(np.abs(y - burst) ** 2)
    assert noise_power == pytest.approx(np.mean(np.abs(x[active]) ** 2), rel=0.05)
    half = add_awgn(x, 0.0, RATE, RATE, rng(3), signal_share=0.5)
    assert np.mean(np.abs(half - x) ** 2) == pytest.approx(0.5, rel=0.05)
    # bandwidth wider than the rate is clamped: the noise is then the plain SNR's
    wide = add_awgn(x, 0.0, 10 * RATE, RATE, rng(3))
    assert np.mean(np.abs(wide - x) ** 2) == pytest.approx(1.0, rel=0.05)


def test_005_cfo_moves_the_spectral_peak_and_phase_turns():
    n = 1 << 14
    y, used = apply_channel(tone(50e3, n), rng(), RATE, Impairments(cfo_hz=12_345.0))
    assert peak_hz(y) == pytest.approx(62_345.0, abs=RATE / n)
    assert used["cfo_hz"] == 12_345.0
    y, _ = apply_channel(np.ones(8, np.complex64), rng(), RATE, Impairments(phase_deg=30))
    assert np.degrees(np.angle(y)) == pytest.approx(np.full(8, 30.0), abs=1e-3)


def test_006_phase_noise_is_a_random_walk_of_the_linewidth():
    linewidth = 200.0
    y, _ = apply_channel(np.ones(1 << 16, np.complex64), rng(4), RATE,
                         Impairments(phase_noise=linewidth))
    steps = np.diff(np.unwrap(np.angle(y)))
    assert np.var(steps) == pytest.approx(2 * np.pi * linewidth / RATE, rel=0.05)
    assert np.allclose(np.abs(y), 1, atol=1e-5)


def test_007_timing_offset_delays_by_a_fraction_of_a_sample():
    f, n = 0.11 * RATE, 100_000                                   # a long capture too
    y, _ = apply_channel(tone(f, n), rng(), RATE, Impairments(timing_offset=0.3))
    mid = slice(100, n - 100)
    lag = np.angle(np.vdot(tone(f, n)[mid], y[mid])) / (-2 * np.pi * f / RATE)
    assert lag == pytest.approx(0.3, abs=1e-3)
    assert np.abs(y[mid]) == pytest.approx(np.ones(n - 200), abs=1e-3)


def test_008_sample_rate_offset_scales_frequencies():
    f, n, ppm = 0.2 * RATE, 1 << 17, 500.0                       # drifts 65 samples
    y, _ = apply_channel(tone(f, n), rng(), RATE, Impairments(sro_ppm=ppm))
    mid = y[64:-128]
    assert mean_freq_hz(mid) == pytest.approx(f * (1 + ppm * 1e-6), abs=0.5)
    assert np.abs(mid) == pytest.approx(np.ones(len(mid)), abs=2e-3)


@pytest.mark.parametrize("profile", ["tdl-a", "tdl-b", "tdl-c"])
def test_009_multipath_power_delay_profile_has_the_delay_spread(profile):
    rate, spread_ns, n, trials = 100e6, 200.0, 512, 300
    impulse = np.zeros(n, np.complex64)
    impulse[0] = 1
    imp = Impairments(multipath=profile, delay_spread_ns=spread_ns)
    r = rng(5)
    pdp = np.mean([np.abs(apply_channel(impulse, r, rate, imp)[0]) ** 2
                   for _ in range(trials)], axis=0)
    delay_ns = np.arange(n) / rate * 1e9
    mean = np.sum(pdp * delay_ns) / pdp.sum()
    rms = np.sqrt(np.sum(pdp * delay_ns ** 2) / pdp.sum() - mean ** 2)
    assert rms == pytest.approx(spread_ns, rel=0.1)
    if profile == "tdl-a":   # the 0 dB path arrives 0.3819 spreads late
        assert np.argmax(pdp) == round(0.3819 * spread_ns * 1e-9 * rate)
    # unit mean power for a band-limited signal (past the first echoes' start-up)
    x = qpsk(2048, sps=4).iq
    power = np.mean([np.mean(np.abs(apply_channel(x, r, rate, imp)[0][200:]) ** 2)
                     for _ in range(trials)])
    assert power == pytest.approx(1.0, rel=0.1)


def test_010_fading_is_rayleigh_with_its_doppler():
    rate, n, speed, carrier = 10e3, 1 << 14, 30.0, 1.8e9
    doppler = speed / 3.6 * carrier / 299_792_458.0                # 50 Hz
    imp = Impairments(multipath="tdl-c", delay_spread_ns=30, speed_kmh=speed,
                      carrier_hz=carrier)
    h, used = apply_channel(np.ones(n, np.complex64), rng(6), rate, imp)
    assert used["doppler_hz"] == pytest.approx(doppler)
    spec = np.abs(np.fft.fft(h * np.hanning(n))) ** 2
    f = np.abs(np.fft.fftfreq(n, 1 / rate))
    assert spec[f <= 1.1 * doppler].sum() / spec.sum() > 0.99      # no faster than Doppler
    assert spec[f > 0.3 * doppler].sum() / spec.sum() > 0.2        # but it does fade
    first = np.array([apply_channel(np.ones(4, np.complex64), rng(s), rate, imp)[0][1]
                      for s in range(2000)])
    power = np.abs(first) ** 2
    assert power.mean() == pytest.approx(1.0, rel=0.1)
    assert np.mean(power < 0.1) == pytest.approx(1 - np.exp(-0.1), abs=0.03)   # exponential


def test_011_iq_imbalance_keeps_i_skews_q_and_makes_an_image():
    g_db, phi_deg, n = 1.0, 5.0, 4096
    f = 410 * RATE / n                                            # on an FFT bin
    x = tone(f, n)
    y, used = apply_receiver(x, rng(), Impairments(iq_gain_db=g_db, iq_phase_deg=phi_deg))
    g, phi = 10 ** (g_db / 20), np.radians(phi_deg)
    assert y.real == pytest.approx(x.real, abs=1e-6)
    assert y.imag == pytest.approx(g * (x.imag * np.cos(phi) - x.real * np.sin(phi)), abs=1e-5)
    spec = np.abs(np.fft.fft(y)) ** 2
    k = round(f / RATE * n)
    image = (1 + g * g - 2 * g * np.cos(phi)) / (1 + g * g + 2 * g * np.cos(phi))
    assert spec[-k] / spec[k] == pytest.approx(image, rel=0.01)
    assert used["iq_gain_db"] == g_db and used["iq_phase_deg"] == phi_deg


def test_012_dc_offset_appears_at_dc():
    x = tone(123e3, 4096) * np.float32(2)
    y, _ = apply_receiver(x, rng(), Impairments(dc_offset_db=-20))
    assert abs(np.mean(y)) == pytest.approx(2 * 10 ** (-20 / 20), rel=0.01)
    assert peak_hz(y - np.mean(y)) == pytest.approx(123e3, abs=RATE / 4096)


def test_013_clipping_bounds_each_rail():
    x = qpsk(4096).iq * np.float32(3)
    y, used = apply_receiver(x, rng(), Impairments(clip_db=0))
    level = np.sqrt(np.mean(np.abs(x) ** 2) / 2)                  # rail rms, clip at 0 dB
    assert np.max(np.abs(y.real)) <= level * 1.0001 and np.max(np.abs(y.imag)) <= level * 1.0001
    assert np.mean(np.abs(y.real) >= level * 0.9999) > 0.1         # and it does clip
    assert used["clip_db"] == 0


def test_014_gain_change_steps_the_level():
    n = 4096
    y, used = apply_receiver(np.ones(n, np.complex64), rng(7), Impairments(gain_change_db=6))
    at = used["gain_change_at"]
    assert n // 4 <= at < 3 * n // 4
    assert np.abs(y[: n // 4]) == pytest.approx(np.ones(n // 4))
    assert np.abs(y[-n // 8:]) == pytest.approx(np.full(n // 8, 10 ** (6 / 20)), rel=1e-5)


def test_015_ranges_are_drawn_per_example_and_reported():
    imp = Impairments.from_dict({"cfo_hz": [-1000, 1000], "sro_ppm": [-5, 5],
                                 "clip_db": [3, 6], "multipath": "tdl-b",
                                 "delay_spread_ns": [10, 300], "speed_kmh": [0, 120]})
    r = rng(8)
    seen = [impair(qpsk(256), r, RATE, imp, 5.0)[1] for _ in range(20)]
    assert all(list(p) == list(PARAM_KEYS) for p in seen)
    cfo = [p["cfo_hz"] for p in seen]
    assert all(-1000 <= c <= 1000 for c in cfo) and len(set(cfo)) == 20
    assert all(3 <= p["clip_db"] <= 6 and p["multipath"] == 2 for p in seen)
    assert all(isinstance(v, (int, float)) for p in seen for v in p.values())


def test_016_same_seed_same_bytes():
    imp = Impairments.from_dict({"cfo_hz": [-1e4, 1e4], "phase_noise": 50, "sro_ppm": 30,
                                 "multipath": "tdl-a", "speed_kmh": 100,
                                 "iq_gain_db": 0.5, "dc_offset_db": -30,
                                 "gain_change_db": [-3, 3], "clip_db": 6})
    a = impair(qpsk(2048), rng(9), RATE, imp, 3.0)
    b = impair(qpsk(2048), rng(9), RATE, imp, 3.0)
    c = impair(qpsk(2048), rng(10), RATE, imp, 3.0)
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1]
    assert a[0].tobytes() != c[0].tobytes()
    assert a[0].dtype == np.complex64 and a[0].shape == (2048,)


@pytest.mark.parametrize("d,key", [({"cfo": 1}, "cfo"), ({"cfo_hz": "fast"}, "cfo_hz"),
                                   ({"sro_ppm": [5, 1]}, "sro_ppm"),
                                   ({"clip_db": [1, 2, 3]}, "clip_db"),
                                   ({"multipath": "tdl-z"}, "multipath"),
                                   ({"timing_offset": 2}, "timing_offset"),
                                   ({"phase_noise": -1}, "phase_noise"),
                                   ({"iq_gain_db": True}, "iq_gain_db"),
                                   ({"cfo_hz": None}, "cfo_hz"),
                                   ({"dc_offset_db": float("nan")}, "dc_offset_db")])
def test_017_bad_settings_name_the_key(d, key):
    with pytest.raises(InputError, match=f"^recipe.yaml impairments: {key}|'{key}'") as e:
        Impairments.from_dict(d, where="recipe.yaml impairments")
    assert "\n" not in str(e.value) and key in str(e.value)
    with pytest.raises(InputError):
        Impairments.from_dict([1, 2], where="x")


def test_018_to_dict_round_trip():
    imp = Impairments.from_dict({"cfo_hz": [-5, 5], "multipath": "tdl-c", "clip_db": 3})
    d = imp.to_dict()
    assert d["cfo_hz"] == [-5.0, 5.0] and d["dc_offset_db"] is None
    assert Impairments.from_dict(d) == imp
    assert set(d) == {f.name for f in dataclasses.fields(Impairments)}


def test_019_impair_adds_noise_only_when_asked():
    sig = qpsk(1024)
    quiet, used = impair(sig, rng(), RATE, Impairments(), None)
    assert quiet.tobytes() == sig.iq.tobytes() and list(used) == list(PARAM_KEYS)
    noisy, _ = impair(sig, rng(), RATE, Impairments(), 0.0)
    assert np.mean(np.abs(noisy - sig.iq) ** 2) == pytest.approx(
        RATE / sig.bandwidth, rel=0.15)
