"""The ML-core energy detector and spectral estimation, without GNU Radio."""

import numpy as np
import pytest

from spectrumfm import dsp
from spectrumfm.detect import EnergyDetector, EnergyDetectorConfig
from spectrumfm.schema import validate_decision

FS, CF, K, F = 1e6, 100e6, 256, 16
SLOT = K * F
NOISE_VAR = 1e-2            # -20 dB per complex sample
TONE_BIN = 56               # channel 3 (bins 48..63), bin-centred
BAND = (160, 192)           # a noise-like burst over channels 10 and 11
BURST = (10 * SLOT + 512, 30 * SLOT + 1152)   # starts on a frame, ends mid-frame


def noise(n, var=NOISE_VAR, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(var / 2)
    return x.astype(np.complex64)


def bin_freq(k, n=K, fs=FS):
    """Offset of bin k's centre from the tuned frequency (fftshift order), Hz."""
    return (k - n // 2) * fs / n


def band_burst(n, k_lo, k_hi, snr_db, seed=1):
    """Noise-like signal filling bins [k_lo, k_hi) exactly, at snr_db over NOISE_VAR per bin."""
    rng = np.random.default_rng(seed)
    spec = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    f = np.fft.fftfreq(n, 1 / FS)
    spec[(f < bin_freq(k_lo - 0.5)) | (f >= bin_freq(k_hi - 0.5))] = 0
    sig = np.fft.ifft(spec)
    power = NOISE_VAR * 10 ** (snr_db / 10) * (k_hi - k_lo) / K
    return (sig * np.sqrt(power / np.mean(np.abs(sig) ** 2))).astype(np.complex64)


def scene(n_slots=48, seed=0, burst=True):
    """Noise + a continuous tone (0 dB wideband SNR) + a band-limited 10 dB burst."""
    n = n_slots * SLOT
    x = noise(n, seed=seed)
    tone = np.sqrt(NOISE_VAR) * np.exp(2j * np.pi * bin_freq(TONE_BIN) / FS * np.arange(n))
    x += tone.astype(np.complex64)
    if burst:
        x[BURST[0]:BURST[1]] += band_burst(BURST[1] - BURST[0], *BAND, snr_db=10.0)
    return x


def run(det, x, batch=None):
    if batch is None:
        return det.process(x, 0) + det.flush()
    out = []
    for i in range(0, x.size, batch):
        out += det.process(x[i:i + batch], i)
    return out + det.flush()


def test_001_dsp_tone_reads_0db_and_noise_its_level():
    n, n_avg = 1024, 64
    t = np.arange(n * n_avg)
    tone = np.exp(2j * np.pi * 100 / n * t).astype(np.complex64)
    for name in dsp.WINDOWS:
        row = dsp.power_spectrum_db(tone.reshape(1, n_avg, n), name)[0]
        assert row.dtype == np.float32 and row.shape == (n,)
        assert np.argmax(row) == n // 2 + 100
        assert abs(row[n // 2 + 100]) < 0.01, name
    rows = dsp.power_spectrum_db(noise(n * n_avg * 4, var=1.0).reshape(4, -1), "hann", fft_size=n)
    assert rows.shape == (4, n)
    assert abs(np.mean(rows) - dsp.noise_bin_gain_db("hann", n)) < 0.2
    silence = np.zeros((1, 1, 8), np.complex64)
    assert dsp.power_spectrum_db(silence, "rect").min() == pytest.approx(-200)


def test_002_dsp_frame_powers_noise_mean_is_variance():
    p = dsp.frame_powers(noise(4096 * K, var=0.5), "hann", K)
    assert p.shape == (4096, K)
    assert abs(p.mean() / 0.5 - 1) < 0.01
    with pytest.raises(ValueError):
        dsp.frame_powers(np.zeros(100, np.complex64), "hann", K)
    with pytest.raises(ValueError):
        dsp.get_window("kaiser", 16)


@pytest.mark.parametrize("batch", [None, SLOT, 3 * SLOT])
def test_003_occupancy_grid_is_the_truth(batch):
    det = EnergyDetector(EnergyDetectorConfig(pfa=1e-5), FS, CF)
    out = run(det, scene(), batch)
    for d in out:
        validate_decision(d)
    occ = [d for d in out if d["task"] == "occupancy"]
    assert len(occ) == 48 * 16
    grid = np.array([d["label"] == "occupied" for d in occ]).reshape(48, 16)
    truth = np.zeros((48, 16), bool)
    truth[:, 3] = True
    truth[10:31, 10:12] = True
    assert np.array_equal(grid, truth)
    scores = np.array([d["score"] for d in occ]).reshape(48, 16)
    assert np.all((scores > 0.5) == truth)
    first = occ[3]
    assert first["freq_lo"] == CF - FS / 2 + 3 * FS / 16
    assert first["freq_hi"] == CF - FS / 2 + 4 * FS / 16
    assert occ[16]["sample_start"] == SLOT and occ[16]["sample_count"] == SLOT
    assert det.noise_floor_db == pytest.approx(-20.0, abs=0.3)


@pytest.mark.parametrize("batch", [None, SLOT, 5 * K])
def test_004_emission_boxes_match_truth_and_a_burst_is_one_box(batch):
    det = EnergyDetector(EnergyDetectorConfig(pfa=1e-3), FS, CF)
    boxes = [d for d in run(det, scene(), batch) if d["task"] == "emission"]
    assert len(boxes) == 2
    burst = next(b for b in boxes if b["freq_lo"] > CF)
    tone = next(b for b in boxes if b["freq_lo"] < CF)
    assert abs(burst["sample_start"] - BURST[0]) <= K
    assert abs(burst["sample_start"] + burst["sample_count"] - BURST[1]) <= K
    assert abs(burst["freq_lo"] - (CF + bin_freq(BAND[0] - 0.5))) <= FS / K
    assert abs(burst["freq_hi"] - (CF + bin_freq(BAND[1] - 0.5))) <= FS / K
    assert burst["snr_db"] == pytest.approx(10.0, abs=1.0)
    assert tone["freq_lo"] <= CF + bin_freq(TONE_BIN) <= tone["freq_hi"]
    assert tone["freq_hi"] - tone["freq_lo"] <= 2 * FS / K
    assert tone["sample_start"] == 0 and tone["sample_count"] == 48 * SLOT
    for b in boxes:
        validate_decision(b)
        # (5-frame batches are 5-frame slots: a noisier floor, biased up by the occupied bins)
        assert 0.5 < b["score"] <= 1.0 and b["noise_floor_db"] == pytest.approx(-20, abs=0.6)


def test_005_false_alarm_rate_on_noise_is_near_pfa():
    n_slots = 1000
    x = noise(n_slots * SLOT, seed=7)
    for pfa in (1e-3, 1e-2):
        det = EnergyDetector(EnergyDetectorConfig(pfa=pfa), FS, CF)
        out = det.process(x, 0) + det.flush()
        occ = [d for d in out if d["task"] == "occupancy"]
        rate = np.mean([d["label"] == "occupied" for d in occ])
        assert pfa / 3 < rate < pfa * 3, (pfa, rate)
        # Seeds are set for ~pfa false boxes per slot.
        assert sum(d["task"] == "emission" for d in out) < 10 * pfa * n_slots + 3


def test_006_max_box_splits_a_long_emission_into_contiguous_pieces():
    det = EnergyDetector(EnergyDetectorConfig(max_box_s=20 * K / FS), FS, CF)
    boxes = [d for d in run(det, scene(), SLOT) if d["task"] == "emission" and d["freq_lo"] < CF]
    assert len(boxes) == int(np.ceil(48 * SLOT / (20 * K)))
    starts = [b["sample_start"] for b in boxes]
    assert starts == sorted(starts) and starts[1] == 20 * K
    assert all(b["sample_count"] == 20 * K for b in boxes[:-1])


def test_007_partial_slot_gap_and_retune():
    det = EnergyDetector(EnergyDetectorConfig(), FS, CF)
    x = scene(n_slots=12, burst=False)
    out = det.process(x[:10 * SLOT + 4 * K], 0)      # 10 slots and a 4-frame slot
    occ = [d for d in out if d["task"] == "occupancy"]
    assert len(occ) == 11 * 16 and occ[-1]["sample_count"] == 4 * K
    assert not [d for d in out if d["task"] == "emission"]   # the tone is still open
    # A gap closes the open tone box before the new data is analysed.
    out = det.process(x[11 * SLOT:], 11 * SLOT)
    tone = [d for d in out if d["task"] == "emission"]
    assert len(tone) == 1 and tone[0]["sample_start"] + tone[0]["sample_count"] == 10 * SLOT + 4 * K
    det.set_center_freq(CF + 1e6)                     # retune: the box at the old frequency
    closed = det.process(np.zeros(0, np.complex64), 12 * SLOT)
    assert len(closed) == 1 and closed[0]["center_freq"] == CF
    det.time_offset = 1000.0
    out = det.process(x[:SLOT], 12 * SLOT) + det.flush()
    assert all(d["center_freq"] == CF + 1e6 for d in out)
    assert out[0]["time"] == pytest.approx(1000.0 + 12 * SLOT / FS)


def test_008_floor_holds_with_half_the_band_occupied():
    x = noise(16 * SLOT) + band_burst(16 * SLOT, 0, K // 2, snr_db=10.0)
    det = EnergyDetector(EnergyDetectorConfig(), FS, CF)
    out = det.process(x, 0)
    assert det.noise_floor_db == pytest.approx(-20.0, abs=1.0)
    occupied = [d["label"] == "occupied" for d in out if d["task"] == "occupancy"]
    grid = np.array(occupied).reshape(16, 16)
    assert grid[:, :8].all() and not grid[:, 9:].any()


def test_009_bad_settings_raise():
    with pytest.raises(ValueError):
        EnergyDetectorConfig(n_channels=7)
    with pytest.raises(ValueError):
        EnergyDetectorConfig(pfa=0.0)
    det = EnergyDetector(EnergyDetectorConfig(), FS, CF)
    with pytest.raises(ValueError):
        det.set_pfa(1.5)
    with pytest.raises(ValueError):
        det.process(np.zeros(100, np.complex64), 0)


def test_010_tasks_select_what_is_computed():
    x = scene(n_slots=12, burst=False)
    only_boxes = EnergyDetector(EnergyDetectorConfig(), FS, CF, tasks=("emission",))
    out = run(only_boxes, x)
    assert [d["task"] for d in out] == ["emission"]
    only_grid = EnergyDetector(EnergyDetectorConfig(), FS, CF, tasks=("occupancy",))
    assert {d["task"] for d in run(only_grid, x)} == {"occupancy"}
    with pytest.raises(ValueError):
        EnergyDetector(EnergyDetectorConfig(), FS, CF, tasks=("anomaly",))


RATE, N_FRAMES = 250e3, 780          # the app's 0.05 s slots at 250 kHz: 49 frames


def burst_scene(variant="steady"):
    """Noise (RMS 0.01), a 0.2 tone at +50 kHz all along and a 0.2 burst at -80 kHz from 0.30
    to 0.50 s, switched hard (splatter at both ends). "weak_tail": the burst's last 0.05 s is
    9 dB weaker; "fork": a weaker 35 kHz wide emission joins the burst for its last 0.05 s."""
    n = N_FRAMES * K
    t = np.arange(n) / RATE
    x = noise(n, 1e-4).astype(np.complex128) + 0.2 * np.exp(2j * np.pi * 50e3 * t)
    on, tail = (t >= 0.30) & (t < 0.50), (t >= 0.45) & (t < 0.50)
    amp = np.where(tail & (variant == "weak_tail"), 0.2 * 10 ** (-9 / 20), 0.2)
    x[on] += amp[on] * np.exp(2j * np.pi * -80e3 * t[on])
    if variant == "fork":
        spec = np.fft.fft(noise(tail.sum(), 1.0, seed=5))
        f = np.fft.fftfreq(spec.size, 1 / RATE)
        spec[(f < -79.5e3) | (f >= -45e3)] = 0
        x[tail] += 0.02 * np.fft.ifft(spec) / np.sqrt(np.mean(np.abs(np.fft.ifft(spec)) ** 2))
    return x.astype(np.complex64)


def chunk_bounds(how, frames_per_slot, rng):
    """Frame indices where process() calls start: one call, slots, 10 frames, or random."""
    if how is None:
        return [0, N_FRAMES]
    if how == "random":
        return sorted({0, N_FRAMES, *rng.integers(1, N_FRAMES, 40).tolist()})
    step = frames_per_slot if how == "slot" else how
    return list(range(0, N_FRAMES, step)) + [N_FRAMES]


def covered(boxes, rate=RATE):
    """Time intervals (s) of emission boxes, and whether every frame of [lo, hi) s is in one."""
    spans = sorted((b["sample_start"], b["sample_start"] + b["sample_count"]) for b in boxes)

    def covers(lo, hi):
        mask = np.zeros(int(np.ceil(hi * rate)) + 1, bool)
        for a, b in spans:
            mask[a:b] = True
        return bool(mask[int(np.ceil(lo * rate / K)) * K:int(hi * rate) // K * K].all())
    return [(a / rate, b / rate) for a, b in spans], covers


@pytest.mark.parametrize("variant", ["steady", "weak_tail", "fork"])
@pytest.mark.parametrize("frames_per_slot", [16, 49, 50, 195])
@pytest.mark.parametrize("chunk_frames", [None, "slot", 10, "random"])
def test_burst_box_survives_any_chunking(variant, frames_per_slot, chunk_frames):
    """The burst's box covers [0.30, 0.50] s within 2 frames however the stream is cut into
    calls, and no frame of it (or of the tone) is lost. Regression: the box ended at frame
    440, a call boundary, and 0.45-0.50 s was never reported: the time trim dropped every edge
    frame below half the box's median, so a diluted, weaker or forked end went whole."""
    x = burst_scene(variant)
    det = EnergyDetector(EnergyDetectorConfig(frames_per_slot=frames_per_slot), RATE, 0.0,
                         tasks=("emission",))
    bounds = chunk_bounds(chunk_frames, frames_per_slot, np.random.default_rng(frames_per_slot))
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out += det.process(x[a * K:b * K], a * K)
    out += det.flush()
    frame_s = K / RATE
    spans, covers = covered([d for d in out if d["freq_lo"] - 2e3 <= -80e3 <= d["freq_hi"] + 2e3])
    assert len(spans) == 1, spans
    assert abs(spans[0][0] - 0.30) <= 2 * frame_s and abs(spans[0][1] - 0.50) <= 2 * frame_s, spans
    assert covers(0.30, 0.50), spans                 # every whole frame of the burst
    tone, _ = covered([d for d in out if d["freq_lo"] <= 50e3 <= d["freq_hi"]])
    assert tone == [(0.0, N_FRAMES * frame_s)]


def test_box_trim_keeps_a_weak_or_diluted_end():
    """Only the frames the cell average adds and the one the emission switches in are
    trimmed; a whole call of weaker frames at the end of a box is the emission."""
    from spectrumfm.detect.boxes import BoxTracker
    trim = BoxTracker(K, None, edge_frames=5)._edge_trim
    body = np.full(40, 100.0)
    assert trim(np.r_[0.2, 30.0, body]) == 2          # averaged-in frame, switch-on frame
    assert trim(np.r_[0.2, 3.0, 0.1, 2.0, body]) == 4  # noise cells joined the averaged frame
    assert trim(np.r_[0.2, np.full(49, 25.0), body]) == 1    # 6 dB weaker for a call: kept
    assert trim(np.r_[np.zeros(6), body]) == 5        # never more than edge_frames
    assert trim(np.array([0.0, 0.0, 50.0, 0.0])) == 2 and trim(np.array([7.0])) == 0
    assert trim(np.r_[0.0, 20.0, body]) == 2 and trim(np.r_[0.0, 20.0, 20.0, body]) == 1
