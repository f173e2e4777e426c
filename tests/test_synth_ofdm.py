"""The OFDM technology generators (WiFi, LTE, NR, DVB-T) have their standards' structure.

Each check is an independent detector written here from the standard's text (sequences typed
or built again, timing from the numerology), never the generators' own helpers.
"""

import numpy as np
import pytest
import scipy.signal

from spectrumfm.errors import InputError
from spectrumfm.synth.core import occupied_bandwidth
from spectrumfm.synth.technologies import dvbt, lte, nr, wifi

GENERATORS = {"wifi": wifi.wifi, "lte": lte.lte, "nr": nr.nr, "dvbt": dvbt.dvbt}
#: The narrowest variant's occupied bandwidth (Hz): 802.11a, LTE 1.4 MHz, NR 5 MHz at
#: 15 kHz, DVB-T 8k in a 6 MHz channel.
MIN_RATES = {"wifi": 53 * 312.5e3, "lte": 73 * 15e3, "nr": 300 * 15e3,
             "dvbt": 6817 * 48e6 / 7 / 8192}
#: A variant that does not fit the rate given with it.
TOO_WIDE = {"wifi": ({"phy": "11n"}, 17e6), "lte": ({"bandwidth_mhz": 20}, 15e6),
            "nr": ({"scs_khz": 30, "bandwidth_mhz": 100}, 61.44e6),
            "dvbt": ({"channel_mhz": 8}, 7e6)}
#: (parameters, expected occupied bandwidth in Hz) with every resource element loaded.
FULL = {"wifi": ({"phy": "11a"}, 16.5625e6),
        "lte": ({"bandwidth_mhz": 10, "load": 1.0}, 601 * 15e3),
        "nr": ({"scs_khz": 30, "bandwidth_mhz": 20, "load": 1.0}, 612 * 30e3),
        "dvbt": ({"mode": "8k", "channel_mhz": 8}, 6817 * 64e6 / 7 / 8192)}

LTF = np.array([1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1, 1,
                1, 1, 0, 1, -1, -1, 1, 1, -1, 1, -1, 1, -1, -1, -1, -1, -1, 1, 1, -1, -1, 1,
                -1, 1, -1, 1, 1, 1, 1])             # IEEE 802.11-2020 17.3.3, L_{-26..26}
POLARITY = [1, 1, 1, 1, -1, -1, -1, 1, -1, -1, -1, -1, 1]   # p_0..p_12, 17.3.5.10
CONTINUAL_2K = [0, 48, 54, 87, 141, 156, 192, 201, 255, 279, 282, 333, 432, 450, 483, 525,
                531, 618, 636, 714, 759, 765, 780, 804, 873, 888, 918, 939, 942, 969, 984,
                1050, 1101, 1107, 1110, 1137, 1140, 1146, 1206, 1269, 1323, 1377, 1491, 1683,
                1704]                                # EN 300 744 Table 7


def corr(a, b):
    """Normalised correlation magnitude of two equal-length segments."""
    return abs(np.vdot(a, b)) / np.sqrt(np.vdot(a, a).real * np.vdot(b, b).real)


def lag_metric(x, lag, win):
    """Best normalised correlation of ``win`` samples with the same ``lag`` later (CP search)."""
    p = x[:-lag] * np.conj(x[lag:])
    e1, e2 = np.abs(x[:-lag]) ** 2, np.abs(x[lag:]) ** 2
    box = np.ones(win)
    num = np.abs(np.convolve(p, box, "valid"))
    den = np.sqrt(np.convolve(e1, box, "valid") * np.convolve(e2, box, "valid")) + 1e-12
    return float(np.max(num / den))


def matched(x, ref):
    """|cross-correlation| of ``x`` with the time-domain reference ``ref``."""
    return np.abs(scipy.signal.correlate(x, ref, mode="valid"))


def assert_peaks(c, expected, guard=16, floor=0.5):
    """``c`` peaks at exactly ``expected`` and stays below ``floor`` x its maximum elsewhere."""
    rest = np.ones(c.size, bool)
    for e in expected:
        assert c[e] == c[e - guard:e + guard + 1].max() and c[e] > 0.9 * c.max()
        rest[max(e - guard, 0):e + guard + 1] = False
    assert c[rest].max() < floor * c.max()


def reference(values, subcarriers, nfft):
    grid = np.zeros(nfft, complex)
    grid[np.asarray(subcarriers) % nfft] = values
    return np.fft.ifft(grid)


# -- WiFi ---------------------------------------------------------------------------------

@pytest.mark.parametrize("phy", ["11a", "11n"])
def test_001_wifi_stf_repeats_every_16_and_ltf_every_64(phy):
    x = wifi.wifi(np.random.default_rng(1), 20e6, 800, phy=phy, offset_s=0.0).iq
    assert corr(x[0:144], x[16:160]) > 0.99            # 10 short symbols of 0.8 us
    assert corr(x[0:136], x[24:160]) < 0.5
    assert corr(x[192:256], x[256:320]) > 0.99         # two long symbols of 3.2 us
    assert corr(x[160:192], x[224:256]) > 0.99         # 1.6 us guard interval


def test_002_wifi_cyclic_prefix_at_64_plus_16():
    x = wifi.wifi(np.random.default_rng(2), 20e6, 4000, phy="11a", mcs=0, length_bytes=1000,
                  offset_s=0.0).iq
    m = np.array([corr(x[s:s + 16], x[s + 64:s + 80]) for s in range(280, 3880)])
    blocks = m.reshape(-1, 80)                  # symbol j's start is index 40 of block j
    assert np.all(blocks.argmax(axis=1) == 40) and blocks[:, 40].min() > 0.999


def _equalised(x, start, channel):
    y = np.fft.fft(x[start + 16:start + 80])
    return {k: y[k % 64] / channel[k] for k in range(-28, 29) if channel.get(k)}


def test_003_wifi_signal_field_and_pilot_polarity():
    x = wifi.wifi(np.random.default_rng(3), 20e6, 2000, phy="11a", mcs=4, length_bytes=500,
                  offset_s=0.0).iq
    ltf = np.fft.fft(x[192:256])
    channel = {k: ltf[k % 64] / LTF[k + 26] for k in range(-26, 27) if k}
    for n in range(10):                                 # SIGNAL, then data symbols
        y = _equalised(x, 320 + 80 * n, channel)
        pilots = np.array([y[-21], y[-7], y[7], y[21]])
        assert np.allclose(pilots, POLARITY[n] * np.array([1, 1, 1, -1]), atol=0.05)
    sig = np.array([v for k, v in _equalised(x, 320, channel).items() if abs(k) not in (7, 21)])
    assert np.allclose(np.abs(sig.real), 1, atol=0.05) and np.all(np.abs(sig.imag) < 0.05)


def test_004_wifi_ht_sig_is_qbpsk_and_ht_pilots_rotate():
    x = wifi.wifi(np.random.default_rng(4), 20e6, 1500, phy="11n", length_bytes=300,
                  offset_s=0.0).iq
    ltf = np.fft.fft(x[192:256])
    channel = {k: ltf[k % 64] / LTF[k + 26] for k in range(-26, 27) if k}
    for start in (400, 480):                            # HT-SIG1, HT-SIG2 after L-SIG
        y = np.array([v for k, v in _equalised(x, start, channel).items()
                      if abs(k) not in (7, 21)])
        assert np.allclose(np.abs(y.imag), 1, atol=0.05) and np.all(np.abs(y.real) < 0.05)
    ht_ltf = np.fft.fft(x[656:720])                     # after HT-STF (560..640) and its CP
    values = np.r_[1, 1, LTF, -1, -1]                   # HTLTF_{-28..28}, 19.3.9.4.6
    channel = {k: ht_ltf[k % 64] / values[k + 28] for k in range(-28, 29) if k}
    psi = np.array([1, 1, 1, -1])
    for n in range(8):                                  # HT data symbols from 720
        y = _equalised(x, 720 + 80 * n, channel)
        pilots = np.array([y[-21], y[-7], y[7], y[21]])
        assert np.allclose(pilots, POLARITY[n + 3] * psi[(np.arange(4) + n) % 4], atol=0.05)


def _silent_runs(active):
    """Lengths of the silent stretches that start and end inside the window."""
    d = np.diff(active.astype(np.int8))
    starts, ends = np.flatnonzero(d == -1) + 1, np.flatnonzero(d == 1) + 1
    ends = ends[ends > starts[0]]
    return (ends - starts[:ends.size]).tolist()


def test_005_wifi_packets_gaps():
    sig = wifi.wifi(np.random.default_rng(5), 20e6, 400_000, burst=True, idle_us=200.0)
    runs = _silent_runs(sig.active)
    assert len(runs) >= 5 and min(runs) >= 680           # DIFS = 34 us at least
    assert np.max(np.abs(sig.iq[~sig.active])) < 1e-6
    sig = wifi.wifi(np.random.default_rng(6), 20e6, 100_000, length_bytes=200)
    assert set(_silent_runs(sig.active)) == {320}       # SIFS between back-to-back packets
    for seed in range(20):                              # an example starts inside a packet
        x = wifi.wifi(np.random.default_rng(seed), 20e6, 1024).iq
        assert np.mean(np.abs(x[:32]) ** 2) > 0.05


# -- LTE ----------------------------------------------------------------------------------

def _lte_pss(n_id_2):
    u = (25, 29, 34)[n_id_2]
    n = np.arange(62)
    d = np.exp(-1j * np.pi * u * np.where(n < 31, n * (n + 1), (n + 1) * (n + 2)) / 63)
    return reference(d, np.r_[-31:0, 1:32], 512)


def _lte_sss(n_id_1, n_id_2, subframe):
    def seq(taps):                                      # x(i+5) = sum x(i+t), x(4) = 1
        x = [0, 0, 0, 0, 1]
        while len(x) < 31:
            x.append(sum(x[len(x) - 5 + t] for t in taps) % 2)
        return 1 - 2 * np.array(x)

    q1 = n_id_1 // 30                                   # TS 36.211 6.11.2.1
    q = (n_id_1 + q1 * (q1 + 1) // 2) // 30
    mp = n_id_1 + q * (q + 1) // 2
    m0, n = mp % 31, np.arange(31)
    m1 = (m0 + mp // 31 + 1) % 31
    s, c, z = seq((0, 2)), seq((0, 3)), seq((0, 1, 2, 4))
    s0, s1 = s[(n + m0) % 31], s[(n + m1) % 31]
    c0, c1 = c[(n + n_id_2) % 31], c[(n + n_id_2 + 3) % 31]
    d = np.empty(62)
    if subframe == 0:
        d[0::2], d[1::2] = s0 * c0, s1 * c1 * z[(n + m0 % 8) % 31]
    else:
        d[0::2], d[1::2] = s1 * c0, s0 * c1 * z[(n + m1 % 8) % 31]
    return d


def test_006_lte_pss_every_5_ms_and_sss():
    cell = 101
    sig = lte.lte(np.random.default_rng(7), 7.68e6, 153_600, bandwidth_mhz=5, cell_id=cell,
                  offset_s=0.0)
    c = matched(sig.iq, _lte_pss(cell % 3))
    first = (40 + 512) + 5 * (36 + 512) + 36             # symbol 6 of slot 0, past its CP
    assert_peaks(c, first + 38_400 * np.arange(4))      # every 5 ms at 7.68 MS/s
    for other in {0, 1, 2} - {cell % 3}:
        assert matched(sig.iq, _lte_pss(other)).max() < 0.5 * c.max()
    bins = np.r_[-31:0, 1:32] % 512
    for subframe in (0, 5):                             # SSS: the symbol before the PSS
        s = first - 548 + 38_400 * (subframe // 5)
        y = np.fft.fft(sig.iq[s:s + 512])[bins]
        assert corr(y, _lte_sss(cell // 3, cell % 3, subframe)) > 0.99
        assert corr(y, _lte_sss(cell // 3, cell % 3, 5 - subframe)) < 0.5


def test_007_lte_cyclic_prefix_at_the_fft_size_and_15_khz():
    x = lte.lte(np.random.default_rng(8), 15.36e6, 40_000, bandwidth_mhz=10, load=1.0).iq
    assert lag_metric(x, 1024, 72) > 0.95                # 1024-point FFT, 72-sample CP
    assert lag_metric(x, 512, 72) < 0.5 and lag_metric(x, 2048, 72) < 0.5
    x = lte.lte(np.random.default_rng(9), 20e6, 40_000, bandwidth_mhz=10, load=1.0).iq
    assert lag_metric(x, 1333, 90) > 0.85                # 1 / 15 kHz at 20 MS/s
    assert lag_metric(x, 1024, 90) < 0.5


@pytest.mark.parametrize("ports", [1, 2])
def test_008_lte_reference_signals_every_6th_subcarrier(ports):
    cell = 7
    x = lte.lte(np.random.default_rng(10), 7.68e6, 5000, bandwidth_mhz=5, cell_id=cell,
                ports=ports, load=0.0, offset_s=0.0).iq
    start = (40 + 512) + 3 * (36 + 512) + 36               # symbol 4 of slot 0, past its CP
    y = np.fft.fft(x[start:start + 512])
    k = np.arange(300)
    bins = np.where(k < 150, k - 150, k - 149) % 512       # DC subcarrier skipped
    p = np.abs(y[bins]) ** 2
    shifts = [(3 + cell) % 6, (cell) % 6][:ports]           # v = 3 (port 0), 0 (port 1)
    expected = np.isin(k % 6, shifts)
    assert p[expected].min() > 0.5 * p[expected].mean()
    assert p[~expected].max() < 1e-6 * p[expected].mean()


# -- NR -----------------------------------------------------------------------------------

def _m_sequence(init, taps):
    x = list(init)
    while len(x) < 127:
        x.append(sum(x[len(x) - 7 + t] for t in taps) % 2)
    return np.array(x)


def _nr_pss(n_id_2):
    x = _m_sequence([0, 1, 1, 0, 1, 1, 1], (0, 4))      # TS 38.211 7.4.2.2.1
    return 1 - 2 * x[(np.arange(127) + 43 * n_id_2) % 127]


def _nr_sss(n_id_1, n_id_2):
    x0 = _m_sequence([1, 0, 0, 0, 0, 0, 0], (0, 4))    # TS 38.211 7.4.2.3.1
    x1 = _m_sequence([1, 0, 0, 0, 0, 0, 0], (0, 1))
    m0, m1, n = 15 * (n_id_1 // 112) + 5 * n_id_2, n_id_1 % 112, np.arange(127)
    return (1 - 2 * x0[(n + m0) % 127]) * (1 - 2 * x1[(n + m1) % 127])


def _nr_symbol_starts(nfft, mu, count):
    cp = [(144 + (16 << mu if s % (7 << mu) == 0 else 0)) * nfft // 2048 for s in range(count)]
    return np.cumsum([0] + [nfft + c for c in cp])[:count], np.array(cp)


def test_009_nr_pss_and_sss_of_the_ssb_burst():
    cell, rb0 = 500, 15
    sig = nr.nr(np.random.default_rng(11), 30.72e6, 61_440, scs_khz=30, bandwidth_mhz=20,
                cell_id=cell, ssb_offset_rb=rb0, offset_s=0.0)
    k = 12 * rb0 + 56 + np.arange(127) - 12 * 51 // 2       # PSS subcarriers from the centre
    c = matched(sig.iq, reference(_nr_pss(cell % 3), k, 1024))
    starts, cp = _nr_symbol_starts(1024, 1, 56)
    ssb = [2, 8, 16, 22, 30, 36, 44, 50]                     # case C, L = 8
    assert_peaks(c, starts[ssb] + cp[ssb])
    for other in {0, 1, 2} - {cell % 3}:
        assert matched(sig.iq, reference(_nr_pss(other), k, 1024)).max() < 0.5 * c.max()
    s = starts[ssb[0] + 2] + cp[ssb[0] + 2]
    y = np.fft.fft(sig.iq[s:s + 1024])[k % 1024]
    assert corr(y, _nr_sss(cell // 3, cell % 3)) > 0.99


def test_010_nr_tdd_uplink_is_silent_in_bursts():
    kw = dict(scs_khz=30, bandwidth_mhz=20, tdd="DDDSU", load=1.0, offset_s=0.0)
    sig = nr.nr(np.random.default_rng(12), 20e6, 100_000, burst=True, **kw)
    p = np.abs(sig.iq) ** 2
    slot = 10_000                                           # 0.5 ms at 20 MS/s
    s10 = round(((88 + 1024) + 9 * (72 + 1024)) / 30.72e6 * 20e6)   # symbol 10 of a slot
    for i in range(10):
        kind = "DDDSU"[i % 5]
        a = i * slot
        if kind == "D":
            assert p[a:a + slot].mean() > 0.5 and sig.active[a:a + slot].all()
        elif kind == "U":
            assert p[a + 50:a + slot - 50].max() < 1e-4 and not sig.active[a:a + slot].any()
        else:
            assert p[a:a + s10 - 50].mean() > 0.5 and p[a + s10 + 50:a + slot - 50].max() < 1e-4
    p = np.abs(nr.nr(np.random.default_rng(12), 20e6, 100_000, **kw).iq) ** 2
    assert p.reshape(100, -1).mean(axis=1).min() > 0.3      # burst=False: never silent


# -- DVB-T --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,nfft", [("2k", 2048), ("8k", 8192)])
def test_011_dvbt_guard_interval_at_the_mode_fft_length(mode, nfft):
    cp = nfft // 8
    x = dvbt.dvbt(np.random.default_rng(13), 64e6 / 7, 27_648, mode=mode,
                  channel_mhz=8, guard="1/8", offset_s=0.0).iq
    for i in range(3):
        s = i * (nfft + cp)
        assert corr(x[s:s + cp], x[s + nfft:s + nfft + cp]) > 0.99
    other = 8192 if nfft == 2048 else 2048
    assert lag_metric(x, other, cp) < 0.5


def test_012_dvbt_continual_and_scattered_pilots():
    nfft, cp, n_sym = 2048, 256, 12
    x = dvbt.dvbt(np.random.default_rng(14), 64e6 / 7, n_sym * (nfft + cp), mode="2k",
                  channel_mhz=8, guard="1/8", modulation="64qam", offset_s=0.0).iq
    y = np.stack([np.fft.fft(x[i * (nfft + cp) + cp:(i + 1) * (nfft + cp)])
                  for i in range(n_sym)])[:, (np.arange(1705) - 852) % nfft]   # (l, k)
    coherence = np.abs(y.sum(axis=0)) / np.abs(y).sum(axis=0)
    assert coherence[CONTINUAL_2K].min() > 0.999
    assert np.median(coherence) < 0.5
    data_rms = np.sqrt(np.median(np.abs(y) ** 2))
    assert np.allclose(np.abs(y[:, CONTINUAL_2K]) / data_rms, 4 / 3, rtol=0.2)
    for l in range(n_sym):                                  # k = 3 (l mod 4) + 12 p
        sp = np.abs(y[l, 3 * (l % 4)::12])
        assert sp.std() < 1e-3 * sp.mean()
        assert np.abs(y[l ^ 1, 3 * (l % 4)::12]).std() > 0.05 * sp.mean()   # data there


# -- all four -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("samp_rate", [20e6, 25e6])
def test_013_occupied_bandwidth_at_any_rate(name, samp_rate):
    params, expected = FULL[name]
    sig = GENERATORS[name](np.random.default_rng(15), samp_rate, 65_536, **params)
    assert sig.bandwidth == pytest.approx(expected)
    assert occupied_bandwidth(sig.iq, samp_rate) == pytest.approx(expected, rel=0.04)
    assert sig.iq.dtype == np.complex64 and sig.iq.shape == (65_536,)
    on = sig.iq if sig.active is None else sig.iq[sig.active]
    assert np.mean(np.abs(on) ** 2) == pytest.approx(1, rel=1e-3)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_014_same_seed_same_bytes(name):
    fn = GENERATORS[name]
    a, b = (fn(np.random.default_rng(16), 20e6, 5000, burst=True) for _ in range(2))
    assert a.iq.tobytes() == b.iq.tobytes() and a.params == b.params
    assert fn(np.random.default_rng(17), 20e6, 5000).iq.tobytes() != a.iq.tobytes()
    assert all(isinstance(v, (int, float, str)) for v in a.params.values())


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_015_rate_below_the_narrowest_variant_is_refused(name):
    fn, low = GENERATORS[name], MIN_RATES[name]
    with pytest.raises(InputError, match="at least"):
        fn(np.random.default_rng(0), 0.98 * low, 1024)
    assert fn(np.random.default_rng(0), 1.02 * low, 1024).iq.shape == (1024,)
    params, rate = TOO_WIDE[name]
    with pytest.raises(InputError, match="at least"):
        fn(np.random.default_rng(0), rate, 1024, **params)
