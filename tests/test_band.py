"""Band analysis (spectrumfm.infer.band): grid jobs and decisions, fusion, emission cut-outs,
retune, gap and flush.

Most tests check framing only, so their runners are plain objects with the attributes the
analyzer reads (classes, name, input, fusion, positive) and the probabilities are made up;
the last test runs a random-weight model folder's real runners through decide().
"""

from types import SimpleNamespace

import numpy as np
import pytest

from spectrumfm.infer.band import BandAnalyzer, energy_z, fuse
from spectrumfm.infer.cutout import cut_out
from spectrumfm.schema import validate_decision

FS, FC = 250e3, 433.92e6


def _runner(task, **kw):
    """A stand-in with a runner's attributes (framing tests: it is never called)."""
    base = {
        "occupancy": dict(classes=["vacant", "occupied"], input={"samp_rate": None}, positive=1),
        "anomaly": dict(classes=["normal", "anomalous"], input={"samp_rate": None}, positive=1),
        "technology": dict(classes=["noise", "ble", "wifi"], input={"samp_rate": 20e6},
                           positive=None),
        "modulation": dict(classes=["bpsk", "qpsk"], positive=None,
                           input={"samp_rate": 1e6, "bandwidth_fraction": 0.25}),
    }[task]
    base.update(name=f"fake/{task}", fusion=None)
    base.update(kw)
    return SimpleNamespace(**base)


def _runners(*tasks, **kw):
    return {t: _runner(t, **kw.get(t, {})) for t in tasks}


def _noise(n, seed=0, rms=0.01):
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * rms / np.sqrt(2)).astype(
        np.complex64)


def _tone(x, fs, freq, amp, start=0, stop=None):
    stop = x.size if stop is None else stop
    n = np.arange(start, stop)
    x = x.copy()
    x[start:stop] += (amp * np.exp(2j * np.pi * freq * n / fs)).astype(np.complex64)
    return x


def _feed(an, x, start=0, chunk=7777):
    """Odd chunk sizes, as a flowgraph's work() calls bring them."""
    jobs = []
    for i in range(0, x.size, chunk):
        jobs += an.process(x[i:i + chunk], start + i)
    return jobs


def _centre(k, C, fs=FS):
    return (k + 0.5) * fs / C - fs / 2


def test_grid_jobs_share_windows_and_hold_each_channel():
    C, W = 8, 2
    an = BandAnalyzer(_runners("occupancy", "anomaly"), FS, FC, n_channels=C, windows_per_cell=W)
    assert an.slot_len % (128 * C) == 0
    x = _tone(_noise(int(0.3 * FS)), FS, _centre(6, C), 0.1)
    jobs = _feed(an, x)
    occ = [j for j in jobs if j.task == "occupancy"]
    ano = [j for j in jobs if j.task == "anomaly"]
    assert len(occ) == len(ano) == x.size // an.slot_len
    for k, (a, b) in enumerate(zip(occ, ano)):
        assert a.windows is b.windows and a.context is b.context     # one framing for both
        assert a.windows.shape == (C * W, 128) and a.windows.dtype == np.complex64
        assert a.context.sample_start == k * an.slot_len
        assert a.context.sample_count == an.slot_len
        power = (np.abs(a.windows) ** 2).mean(axis=1).reshape(C, W).mean(axis=1)
        assert np.argmax(power) == 6 and power[6] > 100 * np.median(power)


def test_grid_windows_follow_the_adapters_channel_view():
    """Adapters trained on twice-wide channel windows get them: a tone at a channel's upper
    edge shows in that channel's and its neighbour's windows, at twice the rate."""
    C = 8
    wide = {"samp_rate": None, "oversample": 2}
    an = BandAnalyzer(_runners("occupancy", "anomaly", occupancy={"input": wide},
                               anomaly={"input": wide}), FS, FC, n_channels=C)
    assert an.oversample == 2 and an.channelizer.decimation == C // 2
    x = _tone(_noise(int(0.2 * FS)), FS, _centre(3, C) + 0.4 * FS / C, 0.1)
    job = [j for j in _feed(an, x) if j.task == "occupancy"][0]
    power = (np.abs(job.windows) ** 2).mean(axis=1)
    assert set(np.flatnonzero(power > 100 * np.median(power))) == {3, 4}
    # At twice the rate the tone is 0.4 / 2 cycles per sample above channel 3's centre.
    w = job.windows[3]
    f = np.angle(np.mean(w[1:] * np.conj(w[:-1]))) / (2 * np.pi)
    assert f == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="channel views"):
        BandAnalyzer(_runners("occupancy", "anomaly", occupancy={"input": wide}), FS, FC,
                     n_channels=C)


@pytest.mark.parametrize("oversample", [1, 2])
def test_grid_windows_are_scaled_to_unit_noise_by_the_detected_floor(oversample):
    """Whatever the receiver's level, a noise-only channel window has unit variance per
    sample (the level-aware sensing features read the SNR from it); a channel holding a
    10 dB emitter stands about 10 dB above it."""
    C = 8
    view = {"samp_rate": None, "oversample": oversample}
    for rms in (1e-3, 3.0):
        an = BandAnalyzer(_runners("occupancy", occupancy={"input": view}), FS, FC,
                          n_channels=C, windows_per_cell=4)
        x = _noise(int(0.4 * FS), seed=4, rms=rms)
        jobs = _feed(an, _tone(x, FS, _centre(2, C), rms * np.sqrt(10.0)))
        power = np.stack([(np.abs(j.windows) ** 2).mean(axis=1).reshape(C, 4).mean(axis=1)
                          for j in jobs[2:]]).mean(axis=0)               # floor settled
        quiet = [k for k in range(C) if abs(k - 2) > 1]
        assert np.median(power[quiet]) == pytest.approx(1.0, rel=0.15)
        # A tone of 10x the noise power lands whole in one channel: SNR there 10 * C / view.
        assert power[2] == pytest.approx(1 + 10 * C / oversample, rel=0.25)


def test_a_slot_as_long_as_its_windows_gets_them_whole():
    """The evaluation's setting: a slot of one block and two twice-wide windows per channel
    (exactly the slot's samples). The slot is one block, not two, and its windows are the
    channelizer's output over the whole stream (context after the slot awaited, no edge)."""
    from spectrumfm.infer.channelizer import Channelizer

    C, N = 8, 128
    view = {"samp_rate": None, "oversample": 2}
    an = BandAnalyzer(_runners("occupancy", occupancy={"input": view}), FS, FC, n_channels=C,
                      windows_per_cell=2, slot_s=N * C / FS)
    assert an.slot_len == N * C
    x = _noise(20 * N * C, seed=9, rms=1.0)
    jobs = [j for j in _feed(an, x, chunk=999) if j.task == "occupancy"]
    assert len(jobs) == 19                       # the last awaits context (flush takes it)
    whole = Channelizer(C, oversample=2)(x).numpy()                       # (C, T / 4)
    for k in (3, 11):
        job = jobs[k]
        got = job.windows.reshape(C, 2 * N)
        want = whole[:, k * 2 * N:(k + 1) * 2 * N]
        # Same samples; the floor used for scaling moves slowly, so compare shapes.
        ratio = np.abs(got).sum() / np.abs(want).sum()
        np.testing.assert_allclose(got, want * ratio, rtol=1e-3, atol=1e-4 * ratio)
    assert len(an.flush()) >= 1


def test_decide_one_decision_per_channel_tiling_the_band():
    C = 8
    an = BandAnalyzer(_runners("occupancy", "anomaly"), FS, FC, n_channels=C)
    x = _tone(_noise(int(0.2 * FS)), FS, _centre(6, C), 0.1)
    job = next(j for j in _feed(an, x)[2:] if j.task == "occupancy")
    probs = np.full((C, 2), [0.9, 0.1])
    probs[6] = [0.2, 0.8]
    ds = an.decide(job, probs)
    assert len(ds) == C
    for d in ds:
        validate_decision(d)
        assert d["task"] == "occupancy" and d["model"] == "fake/occupancy"
        assert d["sample_start"] == job.context.sample_start
        assert d["sample_count"] == an.slot_len
        assert d["time"] == pytest.approx(d["sample_start"] / FS)
        assert {"model_score", "energy_score", "energy_z"} <= set(d)
    lo = [d["freq_lo"] for d in ds]
    hi = [d["freq_hi"] for d in ds]
    assert lo[0] == pytest.approx(FC - FS / 2) and hi[-1] == pytest.approx(FC + FS / 2)
    np.testing.assert_allclose(hi[:-1], lo[1:])
    assert [d["label"] for d in ds] == ["vacant"] * 6 + ["occupied", "vacant"]
    assert ds[6]["score"] == pytest.approx(0.8) and ds[0]["score"] == pytest.approx(0.1)
    # The energy statistic of the same cells: the tone's channel, and only it, is occupied.
    assert ds[6]["energy_score"] > 0.5 and ds[6]["energy_z"] > 10
    assert max(d["energy_score"] for i, d in enumerate(ds) if i != 6) < 0.5
    anomaly = next(j for j in _feed(BandAnalyzer(_runners("anomaly"), FS, FC, n_channels=C), x))
    da = an.decide(anomaly, probs)
    assert [d["label"] for d in da].count("anomalous") == 1 and da[6]["label"] == "anomalous"
    assert all(d["task"] == "anomaly" and d["model"] == "fake/anomaly" for d in da)


def test_fusion_math():
    fusion = {"w_model": 0.5, "w_energy": 0.8, "bias": -1.0}
    an = BandAnalyzer(_runners("occupancy", occupancy={"fusion": fusion}), FS, FC, n_channels=4)
    x = _tone(_noise(int(0.1 * FS)), FS, _centre(1, 4), 0.02)
    job = _feed(an, x)[0]
    ds = an.decide(job, np.full((4, 2), [0.7, 0.3]))
    for d in ds:
        want = 1 / (1 + np.exp(-(0.5 * np.log(0.3 / 0.7) + 0.8 * d["energy_z"] - 1.0)))
        assert d["score"] == pytest.approx(want) and d["model_score"] == pytest.approx(0.3)
        assert d["label"] == ("occupied" if want > 0.5 else "vacant")
    assert ds[1]["label"] == "occupied" and ds[0]["label"] == "vacant"
    np.testing.assert_allclose(fuse([0.2, 0.6], [5.0, -1.0], None), [0.2, 0.6])
    # energy_z is a standard normal score on noise whatever the degrees of freedom.
    rng = np.random.default_rng(3)
    for dof in (20.0, 500.0):
        z = energy_z(rng.gamma(dof, 1 / dof, 20000), dof)
        assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    assert np.isfinite(energy_z(1e6, 100.0)) and energy_z(1e6, 100.0) > 30


def _emission_jobs(jobs, task):
    return [j for j in jobs if j.task == task]


def test_emission_is_cut_to_dc_at_the_adapter_rate():
    fs = 2.4e6
    an = BandAnalyzer(_runners("technology", "modulation"), fs, FC)
    x = _tone(_noise(int(0.2 * fs)), fs, 300e3, 0.05, start=int(0.05 * fs), stop=int(0.12 * fs))
    jobs = _feed(an, x, chunk=100_000) + an.flush()
    tech, mod = _emission_jobs(jobs, "technology"), _emission_jobs(jobs, "modulation")
    assert len(tech) == len(mod) == 1
    ctx = tech[0].context
    box = ctx.box
    bin_hz = fs / an.detector.config.fft_size
    assert abs((box["freq_lo"] + box["freq_hi"]) / 2 - (FC + 300e3)) < 2 * bin_hz
    assert abs(box["sample_start"] - 0.05 * fs) < 1000
    assert abs(box["sample_start"] + box["sample_count"] - 0.12 * fs) < 1000
    assert ctx.rate == 20e6 and tech[0].windows.shape == (8, 128)
    w = tech[0].windows
    # At 0 Hz, not at +300 kHz. The noise filled in around the box (20 MS/s of it) makes a
    # one-sample phase step a coarse estimate; a 32-sample one is 32 times finer and
    # unambiguous up to rate / 64 = 312 kHz.
    def freq(lag):
        return np.angle(np.sum(w[:, lag:] * np.conj(w[:, :-lag]))) * ctx.rate / (2 * np.pi * lag)
    assert abs(freq(1)) < 100e3 and abs(freq(32)) < bin_hz, (freq(1), freq(32))
    assert np.abs(w).mean() > 0.03                        # the tone, not silence
    width = box["freq_hi"] - box["freq_lo"]
    assert mod[0].context.rate == pytest.approx(width / 0.25, rel=1e-3)
    d = an.decide(tech[0], np.tile([0.1, 0.7, 0.2], (8, 1)))
    assert len(d) == 1
    d = d[0]
    validate_decision(d)
    assert (d["task"], d["label"], d["model"]) == ("technology", "ble", "fake/technology")
    assert d["score"] == pytest.approx(0.7)
    assert (d["freq_lo"], d["freq_hi"]) == (box["freq_lo"], box["freq_hi"])
    assert d["windows"] == 8 and d["wider_than_capture"] is False and d["snr_db"] > 10


def _outside_power(windows, guard=4):
    """Mean periodogram (Hann, per sample variance scale) of the windows' bins at least
    ``guard`` bins from 0 Hz (the cut-out box sits in the DC bins), and per bin."""
    n = windows.shape[1]
    hann = np.hanning(n)
    spec = np.abs(np.fft.fft(windows * hann, axis=1)) ** 2 / np.sum(hann ** 2)   # (W, n)
    k = np.abs(np.fft.fftfreq(n) * n)
    per_bin = spec[:, k >= guard].mean(axis=0)
    return per_bin.mean(), per_bin


def test_cut_out_fills_the_band_outside_the_box_with_the_capture_noise():
    fs, rate, rms = 2.4e6, 20e6, 0.01
    x = _tone(_noise(int(0.05 * fs), seed=3, rms=rms), fs, 300e3, 0.05)
    read = lambda start, count: x[start:start + count]                       # noqa: E731
    args = (read, fs, 300e3, 20e3, 0, x.size, rate, 256)
    filled, rate_out = cut_out(*args, noise_var=rms ** 2)
    assert rate_out == rate and filled.shape == (256, 128)
    want = rms ** 2 * rate / fs                  # the capture's density at the output rate
    mean, per_bin = _outside_power(filled)
    assert abs(10 * np.log10(mean / want)) < 0.5
    assert np.all(np.abs(10 * np.log10(per_bin / want)) < 1.5)         # white: every bin
    # The tone is still there, at 0 Hz with its amplitude.
    assert np.abs(filled.mean(axis=1)).mean() == pytest.approx(0.05, rel=0.1)
    # Repeatable: the fill is seeded by the box.
    np.testing.assert_array_equal(cut_out(*args, noise_var=rms ** 2)[0], filled)
    # No floor, no fill: outside the box only the low-pass's stop band leaks.
    bare, _ = cut_out(*args, noise_var=None)
    np.testing.assert_array_equal(bare, cut_out(*args)[0])
    assert _outside_power(bare)[0] < want / 1000
    # Nothing to fill when the output rate is hardly wider than the box.
    narrow, _ = cut_out(read, fs, 300e3, 20e3, 0, x.size, 21e3, 4, noise_var=rms ** 2)
    np.testing.assert_array_equal(narrow, cut_out(read, fs, 300e3, 20e3, 0, x.size, 21e3, 4)[0])


def test_band_analyzer_fills_at_the_detected_noise_floor():
    fs, rms = 2.4e6, 0.01
    an = BandAnalyzer(_runners("technology"), fs, FC)
    x = _tone(_noise(int(0.2 * fs), rms=rms), fs, 300e3, 0.05, start=int(0.05 * fs),
              stop=int(0.12 * fs))
    (job,) = _emission_jobs(_feed(an, x, chunk=100_000) + an.flush(), "technology")
    floor = 10 ** (job.context.box["noise_floor_db"] / 10)
    assert floor == pytest.approx(rms ** 2, rel=0.2)
    mean, _ = _outside_power(job.windows)
    assert abs(10 * np.log10(mean / (floor * 20e6 / fs))) < 1.5


def test_short_packet_gives_one_window():
    fs = 2.4e6
    an = BandAnalyzer(_runners("modulation"), fs, FC)
    x = _tone(_noise(int(0.1 * fs)), fs, -500e3, 0.1, start=100_000, stop=102_000)
    mod = _emission_jobs(_feed(an, x, chunk=50_000) + an.flush(), "modulation")
    assert len(mod) == 1 and mod[0].windows.shape == (1, 128)
    # The packet sits in the middle of its window, its surroundings around it.
    mag = np.abs(mod[0].windows[0])
    assert mag[54:74].mean() > 3 * mag[:10].mean()


def test_emission_wider_than_the_capture_is_flagged():
    an = BandAnalyzer(_runners("technology"), FS, FC)
    x = _noise(int(0.4 * FS))
    s, e = int(0.15 * FS), int(0.25 * FS)
    x[s:e] += _noise(e - s, seed=5, rms=0.1)              # 20 dB over the floor, every bin
    (job,) = _emission_jobs(_feed(an, x) + an.flush(), "technology")
    assert job.context.wider_than_capture and job.windows.shape == (8, 128)
    (d,) = an.decide(job, np.tile([0.2, 0.3, 0.5], (8, 1)))
    assert d["wider_than_capture"] is True and d["freq_hi"] - d["freq_lo"] >= 0.9 * FS


def test_flush_closes_an_open_emission():
    an = BandAnalyzer(_runners("technology"), FS, FC)
    x = _tone(_noise(int(0.3 * FS)), FS, 40e3, 0.05)
    assert not _emission_jobs(_feed(an, x), "technology")
    tech = _emission_jobs(an.flush(), "technology")
    assert len(tech) == 1
    box = tech[0].context.box
    assert box["sample_start"] < 1000 and box["sample_start"] + box["sample_count"] > x.size - 1000
    assert an.flush() == []


def test_retune_closes_emissions_and_drops_the_partial_slot():
    an = BandAnalyzer(_runners("occupancy", "technology"), FS, FC)
    x = _tone(_noise(int(0.5 * FS)), FS, 40e3, 0.05)
    n1 = int(2.5 * an.slot_len)
    first = _feed(an, x[:n1])
    assert len([j for j in first if j.task == "occupancy"]) == 2
    an.retune(center_freq=FC + 1e6)
    after = _feed(an, x[n1:], start=n1)
    tech = _emission_jobs(after, "technology")
    assert tech and tech[0].context.box["center_freq"] == FC     # closed at the old tuning
    occ = [j for j in after if j.task == "occupancy"]
    assert occ[0].context.sample_start == n1                       # the half slot is gone
    assert occ[0].context.center_freq == FC + 1e6
    # A new rate: time runs on from the last sample at the new rate.
    end = x.size
    an.retune(samp_rate=2 * FS)
    assert an.time_offset == pytest.approx(end / FS - end / (2 * FS))
    job = next(j for j in _feed(an, _noise(an.slot_len * 2), start=end) if j.task == "occupancy")
    d = an.decide(job, np.full((16, 2), 0.5))[0]
    assert d["time"] == pytest.approx(end / FS) and d["samp_rate"] == 2 * FS


def test_gap_and_discontinuity():
    an = BandAnalyzer(_runners("occupancy", "technology"), FS, FC)
    x = _tone(_noise(int(0.4 * FS)), FS, 40e3, 0.05)
    n1 = int(1.5 * an.slot_len)
    _feed(an, x[:n1])
    an.gap(lost=25_000)
    assert an.time_offset == pytest.approx(0.1)
    after = _feed(an, x[n1:], start=n1)
    assert _emission_jobs(after, "technology")                     # closed by the gap
    occ = [j for j in after if j.task == "occupancy"]
    assert occ[0].context.sample_start == n1 and occ[0].context.time_offset == pytest.approx(0.1)
    # A sample_start that does not follow the last call is a gap too.
    jumped = _feed(an, x[:n1], start=10 * x.size)
    assert _emission_jobs(jumped, "technology")
    assert [j.context.sample_start for j in jumped if j.task == "occupancy"][0] == 10 * x.size


def test_history_is_bounded():
    an = BandAnalyzer(_runners("technology"), 20e6, 2.44e9, history_s=0.5)
    assert an._ring.buf.nbytes <= (0.5 * 20e6 + 2 * an.slot_len) * 8 + 8
    assert an.detector.config.max_box_s < 0.5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from engine_fixtures import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("models") / "spectrumfm-tiny",
                          tasks=("technology",))


def test_decide_with_real_runners(model_dir):
    import torch

    from spectrumfm.infer.bundle import load_bundle

    bundle = load_bundle(str(model_dir), ["technology"], "cpu")
    runner = bundle.runner("technology")
    fs = 2.4e6
    an = BandAnalyzer(bundle.runners, fs, FC, window_len=bundle.window_len)
    x = _tone(_noise(int(0.05 * fs)), fs, 300e3, 0.05, start=20_000, stop=60_000)
    jobs = _feed(an, x, chunk=100_000) + an.flush()
    assert [j.task for j in jobs] == ["technology"]
    probs = runner(torch.from_numpy(jobs[0].windows)).float().numpy()
    assert probs.shape == (8, len(runner.classes))
    (d,) = an.decide(jobs[0], probs)
    validate_decision(d)
    assert d["model"] == runner.name and d["label"] in runner.classes
    assert d["score"] == pytest.approx(probs.mean(axis=0).max(), rel=1e-5)
