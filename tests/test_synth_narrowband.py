"""The narrowband technology generators (BLE, Zigbee, GSM, FM, LoRa, ADS-B, noise), checked
by receivers written here from the standards, independent of the generators' code."""

import numpy as np
import pytest

from spectrumfm.errors import InputError
from spectrumfm.synth.core import get

NAMES = ("ble", "zigbee", "gsm", "fm", "lora", "adsb", "noise")


def spec(name):
    return get("technology", name)


def gen(name, fs, n, seed=0, **kw):
    return spec(name).generate(np.random.default_rng(seed), fs, n, **kw)


def inst_freq(x, fs):
    """Frequency (Hz) between consecutive samples."""
    return np.angle(x[1:] * np.conj(x[:-1])) * fs / (2 * np.pi)


def obw99(x, fs, nfft=4096):
    """Width (Hz) of the band holding 99 % of the power (0.5 % cut from each edge)."""
    segs = x[:len(x) // nfft * nfft].reshape(-1, nfft) * np.hanning(nfft)
    p = np.fft.fftshift(np.mean(np.abs(np.fft.fft(segs, axis=1)) ** 2, axis=0))
    c = np.cumsum(p) / p.sum()
    f = (np.arange(nfft) - nfft // 2) * fs / nfft
    return f[np.searchsorted(c, 0.995)] - f[np.searchsorted(c, 0.005)]


def first_start(x, after=0):
    """First non-zero sample after a run of zeros (at ``after`` or later)."""
    quiet = np.abs(x) < 1e-6
    return int(np.flatnonzero(quiet[after:-1] & ~quiet[after + 1:])[0]) + after + 1


def lsb_bits(value, n):
    return [(value >> i) & 1 for i in range(n)]


# -- BLE ---------------------------------------------------------------------------------

def ble_crc(bits, init=0x555555):
    # Core Vol 6 Part B 3.1.1, figure 3.4: positions 0-23, input XOR position 23 feeds
    # position 0 and the taps of x^1, x^3, x^4, x^6, x^9, x^10; sent position 23 first.
    pos = lsb_bits(init, 24)
    for d in bits:
        fb = pos[23] ^ d
        pos = [fb] + pos[:23]
        for t in (1, 3, 4, 6, 9, 10):
            pos[t] ^= fb
    return pos[::-1]


def ble_dewhiten(bits, channel):
    reg = int(f"{channel:08b}"[::-1], 2) | 2       # the register as nRF-style radios hold it
    out = []
    for b in bits:
        if reg & 0x80:
            reg ^= 0x11
            b ^= 1
        reg = (reg << 1) & 0xFF
        out.append(b)
    return out


@pytest.mark.parametrize("phy,dev", [("1M", 250e3), ("2M", 500e3)])
def test_001_ble_gfsk_deviation(phy, dev):
    fs = 16e6
    sig = gen("ble", fs, 60000, phy=phy)
    f = inst_freq(sig.iq, fs)[sig.active[1:] & sig.active[:-1]]
    assert np.percentile(np.abs(f), 99) == pytest.approx(dev, rel=0.02)
    assert np.abs(f).max() < 1.02 * dev


@pytest.mark.parametrize("phy,channel", [("1M", 37), ("1M", 39), ("2M", 12)])
def test_002_ble_packet_dewhitens_and_crc_checks_out(phy, channel):
    fs, rate = 8e6, {"1M": 1e6, "2M": 2e6}[phy]
    sps, n_pre = fs / rate, 8 if phy == "1M" else 16
    sig = gen("ble", fs, int(1.2e-3 * fs), seed=channel, phy=phy, channel=channel)
    x = sig.iq
    s0 = first_start(x)
    edge = s0 + int(np.argmax(np.abs(x[s0:]) >= 0.5))   # ramps are centred on the edge
    idx = (edge + (np.arange(int((len(x) - edge) / sps) - 1) + 0.5) * sps).astype(int)
    bits = (inst_freq(x, fs)[idx] > 0).astype(int).tolist()
    aa = lsb_bits(0x8E89BED6, 32)
    assert bits[:n_pre] == [(k + aa[0]) % 2 for k in range(n_pre)]
    assert bits[n_pre:n_pre + 32] == aa
    body = ble_dewhiten(bits[n_pre + 32:], channel)
    length = int("".join(map(str, body[8:16][::-1])), 2)
    pdu = body[:16 + 8 * length]
    assert ble_crc(pdu) == body[len(pdu):len(pdu) + 24]
    assert (body[0] + 2 * body[1] + 4 * body[2] + 8 * body[3]) in ((0, 2) if phy == "1M" else (7,))


# -- Zigbee ------------------------------------------------------------------------------

def zigbee_table():
    # 802.15.4 table 73 by its construction: symbols 1-7 rotate symbol 0 right by 4 chips
    # each; symbols 8-15 are symbols 0-7 with the odd-indexed chips inverted.
    s0 = np.array([int(c) for c in "11011001110000110101001000101110"])
    rows = [np.roll(s0, 4 * k) for k in range(8)]
    conj = [r.copy() for r in rows]
    for r in conj:
        r[1::2] ^= 1
    return 2 * np.array(rows + conj) - 1


def fcs16(data):
    crc = 0                                         # CRC-16/KERMIT: reflected, init 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def test_003_zigbee_msk_deviation():
    fs = 16e6
    sig = gen("zigbee", fs, 60000)
    f = np.abs(inst_freq(sig.iq, fs)[sig.active[1:] & sig.active[:-1]])
    assert np.median(f) == pytest.approx(500e3, rel=0.01)
    assert np.percentile(f, 99) == pytest.approx(500e3, rel=0.01)


def test_004_zigbee_chips_despread_to_shr_phr_and_valid_fcs():
    fs, spc = 8e6, 4                                # 4 samples per 0.5 us chip
    sig = gen("zigbee", fs, int(10e-3 * fs), seed=3, burst=True, interval_ms=5.0)
    x = sig.iq
    start = int(np.flatnonzero(np.abs(x) > 0)[0]) - 0.5
    n_chips = int((len(x) - start) / spc) - 2
    # Chip j's half-sine peaks one chip after it starts: on I for even j, Q for odd j.
    z = x[np.rint(start + spc * (np.arange(n_chips) + 1)).astype(int)]
    z = z * np.where(np.arange(n_chips) % 2, -1j, 1)
    table = zigbee_table()
    phase = np.angle(np.sum(z[:256] * np.tile(table[0], 8)))
    chips = np.sign((z * np.exp(-1j * phase)).real)
    symbols = np.argmax(chips[:n_chips // 32 * 32].reshape(-1, 32) @ table.T, axis=1)
    assert symbols[:10].tolist() == [0] * 8 + [0x7, 0xA]
    length = symbols[10] + 16 * symbols[11]
    psdu = symbols[12:12 + 2 * length].reshape(-1, 2) @ [1, 16]
    assert len(psdu) == length
    assert fcs16(psdu[:-2].tolist()) == psdu[-2] + 256 * psdu[-1]


# -- GSM ---------------------------------------------------------------------------------

def test_005_gsm_constant_envelope_symbol_rate_and_fcch():
    fs = 1e6
    sig = gen("gsm", fs, int(0.3 * fs))
    assert sig.active is None
    assert np.allclose(np.abs(sig.iq), 1.0, atol=1e-3)
    f = inst_freq(sig.iq, fs)
    spectrum = np.abs(np.fft.rfft(f ** 2 - np.mean(f ** 2)))
    freqs = np.fft.rfftfreq(len(f), 1 / fs)
    band = (freqs > 200e3) & (freqs < 350e3)
    line = freqs[band][np.argmax(spectrum[band])]
    assert line == pytest.approx(1625e3 / 6, abs=10)
    # FCCH: 142 zero bits give a pure tone at +1/4 of the symbol rate for 524 us.
    tone = np.abs(f - 1625e3 / 24) < 2e3
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, tone.astype(int), 0])))[::2]
    assert runs.max() >= 0.9 * 142 / (1625e3 / 6) * fs


# -- FM ----------------------------------------------------------------------------------

def band_power(f, fs, lo, hi):
    p = np.abs(np.fft.rfft(f * np.hanning(len(f)))) ** 2
    freqs = np.fft.rfftfreq(len(f), 1 / fs)
    return p[(freqs >= lo) & (freqs < hi)].sum()


@pytest.mark.parametrize("stereo", [True, False])
def test_006_fm_pilot_subcarriers_and_peak_deviation(stereo):
    fs = 1e6
    sig = gen("fm", fs, int(0.2 * fs), stereo=stereo, rds=True, preemphasis_us=75)
    assert sig.active is None
    mpx = inst_freq(sig.iq, fs)
    t = np.arange(len(mpx)) / fs
    pilot = 2 * np.abs(np.mean(mpx * np.exp(-2j * np.pi * 19e3 * t)))
    assert pilot == pytest.approx(6750, rel=0.03) if stereo else pilot < 100
    assert 70e3 < np.abs(mpx).max() < 75.5e3
    stereo_band = band_power(mpx, fs, 23e3, 53e3) / band_power(mpx, fs, 16e3, 18e3)
    assert (stereo_band > 10) == stereo
    assert band_power(mpx, fs, 55e3, 59e3) > 10 * band_power(mpx, fs, 61e3, 65e3)


# -- LoRa --------------------------------------------------------------------------------

def lora_packet_start(x):
    return first_start(x, int(np.flatnonzero(np.abs(x) < 1e-6)[0]))


@pytest.mark.parametrize("sf,bw", [(7, 125e3), (9, 500e3)])
def test_007_lora_chirp_slope(sf, bw):
    fs = 4 * bw
    sig = gen("lora", fs, int(0.4 * fs), seed=sf, sf=sf, bw=bw)
    n_sym = int(2 ** sf / bw * fs)
    s0 = lora_packet_start(sig.iq)
    f = inst_freq(sig.iq, fs)
    k = np.arange(n_sym // 10, 9 * n_sym // 10)
    for sym, sign in ((0, 1), (7, 1), (10, -1), (11, -1)):    # preamble, then SFD
        slope = np.polyfit(k / fs, f[s0 + sym * n_sym + k], 1)[0]
        assert slope == pytest.approx(sign * bw ** 2 / 2 ** sf, rel=0.01)


def test_008_lora_preamble_and_sync_word_dechirp():
    sf, bw = 7, 125e3
    n_sym = 2 ** sf                                 # samples per symbol at fs = bw
    sig = gen("lora", bw, int(0.4 * bw), seed=5, sf=sf, bw=bw, sync_word=0x34)
    s0 = lora_packet_start(sig.iq)
    k = np.arange(n_sym)
    down = np.exp(-2j * np.pi * (-k / 2 + k ** 2 / (2 * n_sym)))
    peaks = []
    for sym in range(10):
        seg = sig.iq[s0 + sym * n_sym:s0 + (sym + 1) * n_sym] * down
        peaks.append(np.argmax(np.abs(np.fft.fft(seg, 8 * n_sym))) / 8)
    rel = (np.array(peaks) - peaks[0]) % n_sym
    assert np.allclose(rel[:8], 0, atol=0.25)
    assert rel[8:10] == pytest.approx([24, 32], abs=0.25)     # 0x34: nibbles times 8


# -- ADS-B -------------------------------------------------------------------------------

def mode_s_remainder(bits):
    v = int("".join(map(str, bits)), 2)
    for i in range(len(bits) - 1, 23, -1):
        if (v >> i) & 1:
            v ^= 0x1FFF409 << (i - 24)
    return v


def test_009_adsb_preamble_pulses_and_crc():
    fs, spc = 8e6, 4                                # 4 samples per 0.5 us chip
    sig = gen("adsb", fs, int(5e-3 * fs), seed=2, burst=True, rate_hz=1000.0)
    env = np.abs(sig.iq)
    s0 = int(np.flatnonzero(env > 0)[0])
    chips = env[s0 + spc * np.arange(240) + spc // 2]
    pulses = np.zeros(16, bool)
    pulses[[0, 2, 7, 9]] = True                     # 0, 1, 3.5 and 4.5 us
    assert chips[:16][pulses].min() > 0.9 * env.max()
    assert chips[:16][~pulses].max() < 0.1 * env.max()
    bits = (chips[16::2] > chips[17::2]).astype(int)
    assert bits[:5].tolist() == [1, 0, 0, 0, 1]     # DF17
    assert mode_s_remainder(bits) == 0


# -- every generator ---------------------------------------------------------------------

def test_010_noise_is_zeros_and_inactive():
    sig = gen("noise", 1e6, 1000)
    assert sig.iq.dtype == np.complex64 and not sig.iq.any()
    assert sig.active.shape == (1000,) and not sig.active.any()
    assert sig.bandwidth == 1e6


@pytest.mark.parametrize("name,fs,n,kw,rel", [
    ("ble", 8e6, 200000, {"phy": "1M"}, 0.1), ("ble", 16e6, 200000, {"phy": "2M"}, 0.1),
    ("zigbee", 16e6, 200000, {}, 0.1), ("gsm", 2e6, 400000, {}, 0.1),
    ("fm", 1e6, 200000, {}, 0.15), ("lora", 1e6, 200000, {"bw": 125e3}, 0.1),
    ("adsb", 40e6, 400000, {"rise_us": 0.1}, 0.15)])
def test_011_occupied_bandwidth_as_reported(name, fs, n, kw, rel):
    sig = gen(name, fs, n, **kw)
    assert obw99(sig.iq, fs) == pytest.approx(sig.bandwidth, rel=rel)


@pytest.mark.parametrize("name,fs,seconds,kw", [
    ("ble", 2e6, 0.06, {"interval_ms": 20.0}), ("zigbee", 4e6, 0.03, {"interval_ms": 5.0}),
    ("gsm", 1e6, 0.05, {"active_slots": 3}), ("lora", 500e3, 1.0, {"sf": 7, "bw": 125e3}),
    ("adsb", 4e6, 0.02, {"rate_hz": 1000.0})])
def test_012_bursts_have_gaps(name, fs, seconds, kw):
    sig = gen(name, fs, int(seconds * fs), burst=True, **kw)
    assert 0.01 < sig.active.mean() < 0.8
    assert np.mean(np.abs(sig.iq[~sig.active]) < 1e-3) > 0.95
    assert np.mean(np.abs(sig.iq[sig.active]) ** 2) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("name", NAMES[:-1])
def test_013_continuous_examples_are_never_just_gap(name):
    fs = 2e6 if name == "adsb" else 4e6
    for seed in range(40):
        sig = gen(name, fs, 1024, seed=seed)
        active = np.ones(1024, bool) if sig.active is None else sig.active
        assert sig.iq.shape == (1024,) and sig.iq.dtype == np.complex64
        assert active.mean() > 0.3
        assert np.mean(np.abs(sig.iq[active]) ** 2) == pytest.approx(1.0, rel=1e-3)
        assert all(isinstance(v, (int, float, str)) for v in sig.params.values())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("burst", [False, True])
def test_014_same_seed_same_bytes(name, burst):
    a, b, c = (gen(name, 4e6, 4096, seed=s, burst=burst).iq.tobytes() for s in (7, 7, 8))
    assert a == b
    assert (a != c) == (name != "noise")


@pytest.mark.parametrize("name", NAMES[:-1])
def test_015_rate_below_minimum_is_refused(name):
    with pytest.raises(InputError, match="use at least"):
        gen(name, 0.9 * spec(name).min_rate, 1024)


@pytest.mark.parametrize("name,fs,kw,minimum", [
    ("ble", 2e6, {"phy": "2M"}, "2.4 MS/s"), ("lora", 400e3, {"bw": 500e3}, "0.5 MS/s")])
def test_016_variant_too_wide_for_the_rate_is_refused(name, fs, kw, minimum):
    with pytest.raises(InputError, match=minimum):
        gen(name, fs, 1024, **kw)


@pytest.mark.parametrize("name,kw", [("ble", {"phy": "3M"}), ("gsm", {"tsc": 9}),
                                     ("lora", {"sf": 6}), ("fm", {"preemphasis_us": 60})])
def test_017_unknown_variant_is_refused(name, kw):
    with pytest.raises(InputError, match="is not one of"):
        gen(name, 4e6, 1024, **kw)
