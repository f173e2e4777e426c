"""The modulation generators, checked with detectors written here: a matched filter of our own
and symbol clustering, envelopes, one-sided spectra, carrier lines and 99 % bandwidths."""

import numpy as np
import pytest

from spectrumfm.errors import InputError
from spectrumfm.synth import core, modulations
from spectrumfm.synth.modulations import MODULATIONS

RADIOML_2018 = ("ook 4ask 8ask bpsk qpsk 8psk 16psk 32psk 16apsk 32apsk 64apsk 128apsk "
                "16qam 32qam 64qam 128qam 256qam am-ssb-wc am-ssb-sc am-dsb-wc am-dsb-sc fm "
                "gmsk oqpsk").split()
# Points of each linear constellation, and rings for APSK / levels per rail for QAM.
POINTS = {"ook": 2, "4ask": 4, "8ask": 8, "bpsk": 2, "qpsk": 4, "8psk": 8, "16psk": 16,
          "32psk": 32, "16apsk": 16, "32apsk": 32, "64apsk": 64, "128apsk": 128, "16qam": 16,
          "32qam": 32, "64qam": 64, "128qam": 128, "256qam": 256}
RINGS = {"16apsk": 2, "32apsk": 3, "64apsk": 4, "128apsk": 6}
RAIL_LEVELS = {"16qam": 4, "32qam": 6, "64qam": 8, "128qam": 12, "256qam": 16}


def gen(name, n, seed=0, rate=1e6, **params):
    spec = core._REGISTRY[("modulation", name)]
    return spec.generate(np.random.default_rng(seed), rate, n, **params)


def rrc(beta, sps, span=8):
    """Root-raised cosine, written from the textbook formula."""
    t = np.arange(-span * sps // 2, span * sps // 2 + 1) / sps + 1e-9
    h = (np.sin(np.pi * t * (1 - beta)) + 4 * beta * t * np.cos(np.pi * t * (1 + beta))) / (
        np.pi * t * (1 - (4 * beta * t) ** 2))
    return h / np.sqrt(np.sum(h ** 2))


def symbols_at_best_phase(x, sps, beta):
    """Matched-filter output at the sampling phase of most power, normalised to unit rms."""
    y = np.convolve(x, rrc(beta, sps))[8 * sps:-8 * sps]
    phase = max(range(sps), key=lambda p: np.mean(np.abs(y[p::sps]) ** 2))
    s = y[phase::sps]
    return s / np.sqrt(np.mean(np.abs(s) ** 2))


def clusters(s, tol):
    """Centres of greedy clusters of radius ``tol``."""
    centres, left = [], s
    while left.size:
        near = np.abs(left - left[0]) < tol
        centres.append(left[near].mean())
        left = left[~near]
    return np.array(centres)


def power_fraction(x, rate, lo, hi):
    """Fraction of the power of ``x`` between ``lo`` and ``hi`` Hz (periodogram)."""
    p = np.abs(np.fft.fft(x)) ** 2
    f = np.fft.fftfreq(len(x), 1 / rate)
    return p[(f >= lo) & (f <= hi)].sum() / p.sum()


def test_001_ids_in_radioml_2018_order():
    assert MODULATIONS == RADIOML_2018
    assert [name for fam, name in core._REGISTRY if fam == "modulation"] == RADIOML_2018


@pytest.mark.parametrize("name", RADIOML_2018)
def test_002_shape_power_and_same_seed_same_bytes(name):
    a, b, c = gen(name, 1000, seed=3), gen(name, 1000, seed=3), gen(name, 1000, seed=4)
    assert a.iq.dtype == np.complex64 and a.iq.shape == (1000,)
    assert np.mean(np.abs(a.iq) ** 2) == pytest.approx(1.0, rel=1e-4)
    assert a.iq.tobytes() == b.iq.tobytes() and a.params == b.params
    assert a.iq.tobytes() != c.iq.tobytes()
    assert 0 < a.bandwidth <= 1e6
    assert all(isinstance(v, (int, float)) for v in a.params.values())


@pytest.mark.parametrize("name", list(POINTS))
def test_003_matched_filter_gives_the_constellation(name):
    sps, beta = 8, 0.5     # roll-off 0.5: the 8-symbol pulses leave ISI below -50 dB
    sig = gen(name, 6000 * sps, sps=sps, rolloff=beta)
    s = symbols_at_best_phase(sig.iq, sps, beta)
    c = clusters(s, tol=0.04)
    assert len(c) == POINTS[name]
    assert np.mean(np.abs(c) ** 2) == pytest.approx(1.0, rel=0.05)   # equiprobable, unit energy
    if name in ("bpsk", "qpsk", "8psk", "16psk", "32psk"):
        assert np.std(np.abs(s)) < 0.02                                # constant modulus
    if name.endswith("ask"):
        assert np.max(np.abs(s.imag)) < 0.05                          # real levels
    if name == "ook":
        assert np.sort(np.abs(c)) == pytest.approx([0, np.sqrt(2)], abs=0.03)   # off / on
    if name in RINGS:
        assert len(clusters(np.abs(c).astype(complex), 0.01)) == RINGS[name]
    if name in RAIL_LEVELS:
        assert len(clusters(c.real.astype(complex), 0.04)) == RAIL_LEVELS[name]
    if name in ("32qam", "128qam"):   # cross: the largest level never on both rails at once
        top = np.max(np.abs(c.real))
        assert not np.any((np.abs(c.real) > top - 0.01) & (np.abs(c.imag) > top - 0.01))


def test_004_gmsk_and_fm_have_constant_envelope():
    for name in ("gmsk", "fm"):
        x = gen(name, 4096).iq
        assert np.std(np.abs(x)) < 1e-3 * np.mean(np.abs(x))


def test_005_gmsk_turns_a_quarter_cycle_per_symbol_at_full_deviation():
    sps = 8
    phase = np.unwrap(np.angle(gen("gmsk", 20000, sps=sps).iq))
    turn = phase[sps:] - phase[:-sps]                        # over one symbol
    assert np.max(np.abs(turn)) == pytest.approx(np.pi / 2, rel=0.02)


def test_006_oqpsk_quadrature_rail_half_a_symbol_late_and_no_zero_crossing():
    sps, beta = 8, 0.5
    x = gen("oqpsk", 4000 * sps, sps=sps, rolloff=beta).iq
    y = np.convolve(x, rrc(beta, sps))
    best = [max(range(sps), key=lambda p: np.mean(np.abs(rail[p::sps]) ** 2))
            for rail in (y.real, y.imag)]
    assert (best[1] - best[0]) % sps == sps // 2
    q = gen("qpsk", 4000 * sps, sps=sps, rolloff=beta).iq
    assert np.min(np.abs(x)) > 5 * np.min(np.abs(q))         # the offset avoids the origin


def test_007_ssb_is_one_sided_and_dsb_symmetric():
    rate = 1e6
    usb = gen("am-ssb-sc", 1 << 15, sideband=1).iq
    lsb = gen("am-ssb-sc", 1 << 15, sideband=-1).iq
    assert power_fraction(usb, rate, -rate / 2, -1) < 0.01
    assert power_fraction(lsb, rate, 1, rate / 2) < 0.01
    dsb = gen("am-dsb-sc", 1 << 15).iq
    assert power_fraction(dsb, rate, 1, rate / 2) == pytest.approx(0.5, abs=0.05)


def test_008_carrier_line_only_with_carrier():
    n, rate = 1 << 14, 1e6
    f = np.fft.fftfreq(n, 1 / rate)
    for name, line in (("am-dsb-wc", True), ("am-dsb-sc", False), ("am-ssb-wc", True),
                       ("am-ssb-sc", False)):
        sig = gen(name, n)
        p = np.abs(np.fft.fft(sig.iq)) ** 2
        in_band = p[(np.abs(f) < sig.params["msg_bw_hz"]) & (f != 0)]
        assert (p[0] / np.median(in_band) > 1e3) == line, name


@pytest.mark.parametrize("name", ["bpsk", "16qam", "128apsk", "oqpsk", "gmsk", "fm",
                                  "am-dsb-sc", "am-dsb-wc"])
def test_009_reported_bandwidth_holds_99_percent_of_the_power(name):
    rate = 1e6
    sig = gen(name, 1 << 16, seed=5)
    half = sig.bandwidth / 2
    assert power_fraction(sig.iq, rate, -half, half) > 0.975
    if name not in ("fm", "am-dsb-wc"):   # Carson's rule and a carrier line: no lower bound
        assert power_fraction(sig.iq, rate, -half / 2, half / 2) < 0.97   # not twice too wide


def test_010_ssb_bandwidth_is_the_message_band():
    sig = gen("am-ssb-sc", 1 << 16, sideband=1)
    assert power_fraction(sig.iq, 1e6, 0, sig.bandwidth) > 0.99
    assert sig.bandwidth == sig.params["msg_bw_hz"]


def test_011_rate_is_nominal_symbol_rate_follows_it():
    a, b = gen("qpsk", 512, rate=1e6, sps=4), gen("qpsk", 512, rate=1e7, sps=4)
    assert a.iq.tobytes() == b.iq.tobytes()
    assert b.bandwidth == pytest.approx(10 * a.bandwidth)
    assert b.params["symbol_rate_hz"] == 2.5e6


def test_012_drawn_parameters_in_their_ranges():
    for seed in range(30):
        p = gen("8psk", 64, seed=seed).params
        assert 2 <= p["sps"] <= 16 and 0.2 <= p["rolloff"] <= 0.5
        assert gen("oqpsk", 64, seed=seed).params["sps"] % 2 == 0


@pytest.mark.parametrize("name,params", [
    ("qpsk", {"sps": 1}), ("qpsk", {"sps": 2.5}), ("qpsk", {"rolloff": 0}),
    ("16qam", {"rolloff": 1.5}), ("oqpsk", {"sps": 5}), ("gmsk", {"sps": True}),
    ("fm", {"msg_bw": 1e5, "mod_index": 5}), ("fm", {"mod_index": -1}),
    ("am-dsb-sc", {"msg_bw": -10}), ("am-ssb-sc", {"sideband": 0}),
    ("am-dsb-wc", {"mod_index": 2}), ("8psk", {"rolloff": "0.3"}),
    ("fm", {"mod_index": "x"})])
def test_013_bad_values_are_input_errors(name, params):
    with pytest.raises(InputError, match=name):
        gen(name, 256, **params)


def test_014_shaped_symbols_public_helper():
    x = modulations.shaped_symbols(np.random.default_rng(0), modulations.CONSTELLATIONS["bpsk"],
                                   800, 4, 0.5)
    assert x.shape == (800,) and np.mean(np.abs(x) ** 2) == pytest.approx(1, rel=1e-4)
    assert np.max(np.abs(x.imag)) < 1e-6
