"""QA for energy_detector: a real flowgraph on synthetic noise, tones and bursts."""

import time

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio.spectrumfm.energy_detector import energy_detector
from gnuradio.spectrumfm.pmtutil import EOS, GAP, RX_FREQ, RX_RATE, RX_TIME, pmt_to_dict
from spectrumfm.schema import validate_decision

FS, CF, K, F = 1e6, 100e6, 256, 16
SLOT = K * F
NOISE_VAR = 1e-2
TONE_BIN = 56                                   # channel 3 of 16
BAND = (160, 192)                               # channels 10 and 11
BURST = (10 * SLOT + 512, 30 * SLOT + 1152)


def bin_freq(k):
    return (k - K // 2) * FS / K


def scene(n, seed=0, tone=True, burst=True):
    """Noise (-20 dB), a continuous bin-centred tone, a band-limited 10 dB burst."""
    rng = np.random.default_rng(seed)
    x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n))
         * np.sqrt(NOISE_VAR / 2)).astype(np.complex64)
    if tone:
        phase = 2j * np.pi * bin_freq(TONE_BIN) / FS * np.arange(n)
        x += (np.sqrt(NOISE_VAR) * np.exp(phase)).astype(np.complex64)
    if burst:
        m = BURST[1] - BURST[0]
        spec = rng.standard_normal(m) + 1j * rng.standard_normal(m)
        f = np.fft.fftfreq(m, 1 / FS)
        spec[(f < bin_freq(BAND[0] - 0.5)) | (f >= bin_freq(BAND[1] - 0.5))] = 0
        sig = np.fft.ifft(spec)
        power = 10 * NOISE_VAR * (BAND[1] - BAND[0]) / K
        sig *= np.sqrt(power / np.mean(np.abs(sig) ** 2))
        x[BURST[0]:BURST[1]] += sig.astype(np.complex64)
    return x


def tag(offset, key, value):
    return gr.python_to_tag((offset, key, value, pmt.intern("qa")))


def run(x, tags=(), eos=True, max_noutput=None, **kw):
    """Run source -> energy_detector -> sink; return (decisions, status dicts, output, block).
    max_noutput caps the items per work() call (None: the scheduler's default)."""
    tags = list(tags) + ([tag(len(x) - 1, EOS, pmt.PMT_T)] if eos else [])
    tb = gr.top_block()
    src = blocks.vector_source_c(x, False, 1, tags)
    det = energy_detector(kw.pop("samp_rate", FS), kw.pop("center_freq", CF), **kw)
    sink = blocks.vector_sink_c()
    decisions, status = blocks.message_debug(), blocks.message_debug()
    tb.connect(src, det, sink)
    tb.msg_connect(det, "decisions", decisions, "store")
    tb.msg_connect(det, "status", status, "store")
    tb.run(*([max_noutput] if max_noutput else []))
    deadline = time.monotonic() + 5    # message delivery is asynchronous to the stream
    count = -1
    while count != decisions.num_messages() and time.monotonic() < deadline:
        count = decisions.num_messages()
        time.sleep(0.05)
    out = [pmt_to_dict(decisions.get_message(i)) for i in range(decisions.num_messages())]
    stat = [pmt_to_dict(status.get_message(i)) for i in range(status.num_messages())]
    return out, stat, np.array(sink.data(), np.complex64), det


def test_001_occupancy_grid_and_boxes_match_the_truth():
    x = scene(48 * SLOT)
    out, _, passed, det = run(x, pfa=1e-5)
    assert np.array_equal(passed, x)
    for d in out:
        validate_decision(d)
    occ = [d for d in out if d["task"] == "occupancy"]
    grid = np.array([d["label"] == "occupied" for d in occ]).reshape(48, 16)
    truth = np.zeros((48, 16), bool)
    truth[:, 3] = True
    truth[10:31, 10:12] = True
    assert np.array_equal(grid, truth)
    boxes = [d for d in out if d["task"] == "emission"]
    assert len(boxes) == 2                            # the 21-slot burst is ONE box
    burst = next(b for b in boxes if b["freq_lo"] > CF)
    assert abs(burst["sample_start"] - BURST[0]) <= K
    assert abs(burst["sample_start"] + burst["sample_count"] - BURST[1]) <= K
    assert abs(burst["freq_lo"] - (CF + bin_freq(BAND[0] - 0.5))) <= FS / K
    assert abs(burst["freq_hi"] - (CF + bin_freq(BAND[1] - 0.5))) <= FS / K
    tone = next(b for b in boxes if b["freq_lo"] < CF)
    assert tone["freq_lo"] <= CF + bin_freq(TONE_BIN) <= tone["freq_hi"]
    stats = det.stats()
    assert stats["samples_in"] == x.size and stats["windows_analyzed"] == 48
    assert stats["windows_dropped"] == 0
    assert 0 <= stats["latency_p50_s"] <= stats["latency_p95_s"] < 1


def test_002_eos_flushes_the_open_box_and_the_partial_slot():
    n = 10 * SLOT + 5 * K + 100                       # 10 slots, 5 frames, a sub-frame rest
    out, _, _, det = run(scene(n, burst=False))
    tone = [d for d in out if d["task"] == "emission"]
    assert len(tone) == 1
    assert tone[0]["sample_start"] == 0 and tone[0]["sample_count"] == 10 * SLOT + 5 * K
    occ = [d for d in out if d["task"] == "occupancy"]
    assert len(occ) == 11 * 16 and occ[-1]["sample_count"] == 5 * K
    assert det.stats()["windows_analyzed"] == 11
    # Without the EOS tag, work() cannot know the stream ended: the partial slot and the open
    # box wait for stop(), whose messages may arrive after message_debug has finished.
    out, _, _, det = run(scene(n, burst=False), eos=False)
    assert len([d for d in out if d["task"] == "occupancy"]) <= 10 * 16
    assert det.stats()["windows_analyzed"] == 11


def test_003_false_alarm_rate_on_noise_is_near_pfa():
    n_slots, pfa = 400, 1e-2
    out, _, _, _ = run(scene(n_slots * SLOT, seed=3, tone=False, burst=False), pfa=pfa,
                       tasks="occupancy")
    labels = [d["label"] for d in out]
    assert len(labels) == n_slots * 16
    rate = labels.count("occupied") / len(labels)
    assert pfa / 3 < rate < 3 * pfa, rate


def test_004_rx_freq_tag_shifts_decision_frequencies():
    x = scene(24 * SLOT, burst=False)
    tags = [tag(0, RX_FREQ, pmt.from_double(915e6)),
            tag(12 * SLOT, RX_FREQ, pmt.from_double(916e6))]
    out, _, _, _ = run(x, tags)
    occ = [d for d in out if d["task"] == "occupancy"]
    assert len(occ) == 24 * 16
    assert all(d["center_freq"] == 915e6 for d in occ if d["sample_start"] < 12 * SLOT)
    assert all(d["center_freq"] == 916e6 for d in occ if d["sample_start"] >= 12 * SLOT)
    assert occ[0]["freq_lo"] == 915e6 - FS / 2 and occ[-1]["freq_hi"] == 916e6 + FS / 2
    tones = [d for d in out if d["task"] == "emission"]
    assert [t["center_freq"] for t in tones] == [915e6, 916e6]   # the retune closes the box
    assert tones[0]["sample_start"] + tones[0]["sample_count"] == 12 * SLOT
    for t, cf in zip(tones, (915e6, 916e6)):
        assert t["freq_lo"] <= cf + bin_freq(TONE_BIN) <= t["freq_hi"]


def test_005_rx_time_tasks_and_status():
    x = scene(8 * SLOT, burst=False)
    utc = pmt.make_tuple(pmt.from_uint64(1_700_000_000), pmt.from_double(0.25))
    out, status, _, _ = run(x, [tag(0, RX_TIME, utc)], tasks="occupancy", model="baseline")
    assert {d["task"] for d in out} == {"occupancy"}
    assert out[0]["time"] == pytest.approx(1_700_000_000.25)
    assert out[16]["time"] == pytest.approx(1_700_000_000.25 + SLOT / FS)
    assert out[0]["model"] == "baseline"
    assert status, "the first work() call posts a status message"
    s = status[0]
    for key in ("windows_per_s", "windows_analyzed", "windows_dropped", "latency_p50_s",
                "latency_p95_s", "noise_floor_db", "center_freq", "samp_rate", "model"):
        assert key in s
    assert s["samp_rate"] == FS and s["model"] == "baseline"


def test_006_rx_rate_tag_keeps_time_running_and_bad_tags_are_ignored():
    x = scene(8 * SLOT, tone=False, burst=False)
    tags = [tag(2 * SLOT, RX_FREQ, pmt.intern("not a number")),
            tag(4 * SLOT, RX_RATE, pmt.from_double(2 * FS)),
            tag(5 * SLOT, RX_TIME, pmt.intern("no time"))]
    out, _, _, _ = run(x, tags, tasks="occupancy")
    # channel 0 of each slot
    starts = sorted({d["sample_start"]: d for d in reversed(out)}.items())
    assert len(starts) == 8
    assert all(d["samp_rate"] == FS and d["center_freq"] == CF for s, d in starts[:4])
    assert all(d["samp_rate"] == 2 * FS for s, d in starts[4:])
    assert starts[4][1]["time"] == pytest.approx(4 * SLOT / FS)
    assert starts[5][1]["time"] == pytest.approx(4 * SLOT / FS + SLOT / (2 * FS))
    assert starts[4][1]["freq_lo"] == CF - FS


def test_007_setters_and_bad_arguments():
    det = energy_detector(FS, CF)
    det.set_pfa(1e-4)
    assert det.detector.config.pfa == 1e-4
    det.set_center_freq(2.4e9)
    assert det.detector.center_freq == 2.4e9
    with pytest.raises(ValueError):
        energy_detector(FS, CF, tasks="technology")
    with pytest.raises(ValueError):
        energy_detector(FS, CF, fft_size=256, n_channels=7)


def burst_scene(rate, weak_tail=False, seed=0):
    """0.8 s of noise (RMS 0.01), a 0.2 tone at +0.2 rate all along and a 0.2 burst at -0.32
    rate from 0.30 to 0.50 s (its last 0.05 s 9 dB weaker if weak_tail)."""
    n = int(0.8 * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.01 / np.sqrt(2)
    x += 0.2 * np.exp(2j * np.pi * 0.2 * rate * t)
    on = (t >= 0.30) & (t < 0.50)
    amp = np.where(weak_tail & (t >= 0.45), 0.2 * 10 ** (-9 / 20), 0.2)
    x[on] += amp[on] * np.exp(2j * np.pi * -0.32 * rate * t[on])
    return x.astype(np.complex64)


@pytest.mark.parametrize("rate, frames_per_slot, max_noutput, weak_tail", [
    (250e3, 49, None, False),         # the app's 0.05 s slots: the reported case
    (250e3, 49, 1000, True),
    (250e3, 16, 3001, False),
    (250e3, 50, None, True),
    (250e3, 195, 777, False),
    (1e6, 16, None, True),            # batches of 2 slots
    (2.4e6, 16, 20000, False),        # batches of 5 slots, work() cuts them anywhere
])
def test_008_burst_box_spans_the_burst_across_slots_and_batches(rate, frames_per_slot,
                                                                 max_noutput, weak_tail):
    """Regression: with 49-frame slots the burst's box ended at frame 440, one frame before a
    slot boundary, and 0.45-0.50 s of the burst was never reported."""
    x = burst_scene(rate, weak_tail)
    out, _, _, _ = run(x, samp_rate=rate, center_freq=0.0, frames_per_slot=frames_per_slot,
                       tasks="emission", max_noutput=max_noutput)
    frame = K / rate

    def spans(f):
        boxes = [d for d in out if d["freq_lo"] - 2 * rate / K <= f <= d["freq_hi"] + 2 * rate / K]
        return sorted((b["sample_start"], b["sample_start"] + b["sample_count"]) for b in boxes)

    burst = spans(-0.32 * rate)
    assert len(burst) == 1, burst
    start, end = burst[0][0] / rate, burst[0][1] / rate
    assert abs(start - 0.30) <= 2 * frame and abs(end - 0.50) <= 2 * frame, (start, end)
    # No emission time lost: every whole frame of the burst is in its box, the tone is whole.
    assert burst[0][0] <= np.ceil(0.30 * rate / K) * K and burst[0][1] >= 0.50 * rate // K * K
    assert spans(0.2 * rate) == [(0, x.size // K * K)]


def test_009_a_gap_ends_boxes_and_no_slot_spans_it():
    x = scene(20 * SLOT, burst=False)
    lost = 3 * SLOT
    gap_at = 8 * SLOT + 1000                          # inside slot 8
    out, _, _, _ = run(x, [tag(gap_at, GAP, pmt.from_uint64(lost))], pfa=1e-5)
    occ = [d for d in out if d["task"] == "occupancy"]
    starts = sorted({d["sample_start"] for d in occ})
    assert 8 * SLOT not in starts                     # the slot across the gap is dropped
    after = [s for s in starts if s >= gap_at]
    assert after[0] == gap_at and all(b - a == SLOT for a, b in zip(after, after[1:]))
    d = next(d for d in occ if d["sample_start"] == gap_at)
    assert d["time"] == pytest.approx((gap_at + lost) / FS)   # time counts the lost samples
    tone = [d for d in out if d["task"] == "emission"]
    assert len(tone) == 2                             # one box each side of the gap
    assert tone[0]["sample_start"] + tone[0]["sample_count"] <= gap_at <= tone[1]["sample_start"]
