"""Wideband scenes: annotations where the energy is, SigMF that validates and replays."""

import json

import numpy as np
import pytest
import scipy.signal

from sfm_testutil import read_jsonl, run_cli
from test_bad_input import assert_one_line_error
from spectrumfm.recording import open_recording
from spectrumfm.synth.scenes import Emitter, Scene, render, write_sigmf

FS, FC = 10e6, 2.44e9


def _scene(seed=4):
    return Scene(FS, FC, 0.02, seed=seed, emitters=[
        Emitter("lte", freq_hz=-2.4e6, snr_db=15, params={"bandwidth_mhz": 3}),
        Emitter("modulation:qpsk", freq_hz=1.5e6, snr_db=12, start_s=0.005, duration_s=0.008,
                params={"sps": 8, "rolloff": 0.35}),
        Emitter("ble", snr_db=20, burst=False, hop_hz=[3.0e6, 4.0e6], hop_dwell_s=0.004,
                start_s=0.002, params={"phy": "1M"})])


def _stft_power(x, nfft=256):
    """Power per time-frequency cell, scaled so that unit-variance white noise reads 1
    (Blackman-Harris: its low sidelobes keep strong emitters out of the cells around them)."""
    w = scipy.signal.get_window("blackmanharris", nfft)
    f, t, z = scipy.signal.stft(x, fs=FS, window=w, nperseg=nfft, noverlap=0,
                                return_onesided=False, boundary=None, padded=False,
                                scaling="spectrum")
    order = np.argsort(f)
    return f[order], t, np.abs(z[order]) ** 2 * w.sum() ** 2 / np.sum(w ** 2)


def test_annotations_cover_the_energy_and_nothing_else():
    x, ann = render(_scene())
    assert len(ann) == 2 + 5            # lte, qpsk, and five BLE hops (4 ms each) in 18 ms
    f, t, p = _stft_power(x)
    t_start = np.arange(p.shape[1]) * 256                  # first sample of each column
    inside = np.zeros(p.shape, bool)
    for a in ann:
        rows = (f + FC >= a["core:freq_lower_edge"]) & (f + FC <= a["core:freq_upper_edge"])
        cols = (t_start >= a["core:sample_start"]) & \
               (t_start + 256 <= a["core:sample_start"] + a["core:sample_count"])
        box = p[np.ix_(rows, cols)]
        snr = a["spectrumfm:snr_db"]
        # In-band SNR over the box: its mean power over the floor within 1.5 dB of the label
        # (continuous emitters); BLE's gaps between packets (~150 us of ~500) lower the mean
        # over the box by up to 3 dB below the SNR, which holds while it transmits.
        measured = 10 * np.log10(box.mean() - 1)
        if a["core:label"] == "ble":
            assert snr - 3.0 < measured < snr + 0.5, (a, measured)
        else:
            assert abs(measured - snr) < 1.5, (a["core:label"], measured)
        # The guard around each box: the OFDM generators apply no transmit filter, so their
        # symbols' sinc sidelobes reach -25..-30 dB for a few percent of the band beyond its
        # edges (docs/generator.md); narrowband emitters need only the STFT's own leakage.
        guard = 0.08 * a["spectrumfm:bandwidth"] + 50e3
        rows_wide = (f + FC >= a["core:freq_lower_edge"] - guard) & \
                    (f + FC <= a["core:freq_upper_edge"] + guard)
        cols_wide = (t_start + 256 > a["core:sample_start"]) & \
                    (t_start < a["core:sample_start"] + a["core:sample_count"])
        inside[np.ix_(rows_wide, cols_wide)] = True
    # Outside every box only the unit noise floor remains: its mean, and its tail (cells of
    # unit-mean exponential power: 1 in 1,000 above 6.9).
    outside = p[~inside]
    assert abs(outside.mean() - 1.0) < 0.05, outside.mean()
    assert np.percentile(outside, 99.9) < 8.0, np.percentile(outside, 99.9)


def test_labels_and_hops():
    _, ann = render(_scene())
    labels = [a["core:label"] for a in ann]
    assert labels.count("ble") == 5 and "lte" in labels and "qpsk" in labels
    hops = [(a["core:freq_lower_edge"] + a["core:freq_upper_edge"]) / 2 - FC
            for a in ann if a["core:label"] == "ble"]
    np.testing.assert_allclose(hops, [3e6, 4e6, 3e6, 4e6, 3e6], atol=1)
    q = next(a for a in ann if a["core:label"] == "qpsk")
    assert q["core:sample_start"] == int(0.005 * FS) and q["core:sample_count"] == int(0.008 * FS)


def test_same_seed_same_scene():
    a, ann_a = render(_scene(seed=1))
    b, ann_b = render(_scene(seed=1))
    c, _ = render(_scene(seed=2))
    np.testing.assert_array_equal(a, b)
    assert ann_a == ann_b and not np.array_equal(a, c)


@pytest.mark.parametrize("datatype", ["cf32_le", "ci16_le", "ci8", "cu8"])
def test_sigmf_round_trip(tmp_path, datatype):
    from sigmf import sigmffile
    scene = _scene()
    scene.datetime = "2026-11-23T00:00:00Z"
    meta, data = write_sigmf(scene, str(tmp_path / "s"), datatype=datatype)
    sigmffile.fromfile(meta).validate()
    doc = json.loads(open(meta).read())
    assert doc["global"]["core:datatype"] == datatype
    assert doc["captures"][0]["core:frequency"] == FC
    ann = doc["annotations"]
    assert {"core:sample_start", "core:sample_count", "core:freq_lower_edge",
            "core:freq_upper_edge", "core:label", "spectrumfm:snr_db"} <= set(ann[0])
    rec = open_recording(meta)
    assert rec.samp_rate == FS and rec.num_samples == int(0.02 * FS)


def test_emitter_outside_the_capture_is_refused():
    scene = Scene(FS, FC, 0.01, [Emitter("lte", freq_hz=4.5e6, params={"bandwidth_mhz": 3})])
    from spectrumfm.errors import InputError
    with pytest.raises(InputError, match="does not fit"):
        render(scene)


def test_random_scene_replays_and_the_detector_finds_its_emitters(tmp_path):
    """A generated scene through `spectrumfm run`: every annotated emitter is found."""
    base = tmp_path / "scene"
    res = run_cli("generate", "--scene", "random", "--emitters", 4, "-s", 4e6, "--freq", 915e6,
                  "--duration", 0.25, "--seed", 11, "--datatype", "ci8", "--out", base)
    assert res.returncode == 0, res.stderr
    meta = tmp_path / "scene.sigmf-meta"
    truth = json.loads(meta.read_text())["annotations"]
    assert truth
    out = tmp_path / "d.jsonl"
    res = run_cli("run", meta, "--fast", "--headless", "--model", "energy-detector",
                  "--decisions", out, "-q")
    assert res.returncode == 0, res.stderr
    boxes = [d for d in read_jsonl(out) if d["task"] == "emission"]
    for a in truth:
        if a["spectrumfm:snr_db"] < 8:
            continue
        hit = [b for b in boxes
               if b["freq_lo"] < a["core:freq_upper_edge"] and b["freq_hi"] > a["core:freq_lower_edge"]
               and b["sample_start"] < a["core:sample_start"] + a["core:sample_count"]
               and b["sample_start"] + b["sample_count"] > a["core:sample_start"]]
        assert hit, a


def test_scene_file_and_its_errors(tmp_path):
    good = tmp_path / "s.yaml"
    good.write_text("version: 1\nsamp_rate: 4e6\ncenter_freq: 433.9e6\nduration_s: 0.05\n"
                    "seed: 2\nemitters:\n"
                    "  - {signal: lora, freq_hz: -1e6, snr_db: 15, params: {bw: 125000}}\n"
                    "  - {signal: modulation:gmsk, freq_hz: 1e6, snr_db: 10}\n")
    res = run_cli("generate", "--scene", good, "--out", tmp_path / "s")
    assert res.returncode == 0, res.stderr
    labels = [a["core:label"] for a in
              json.loads((tmp_path / "s.sigmf-meta").read_text())["annotations"]]
    assert sorted(labels) == ["gmsk", "lora"]
    bad = tmp_path / "b.yaml"
    bad.write_text("samp_rate: 1e6\ncenter_freq: 1e8\nduration_s: 0.01\n"
                   "emitters: [{signal: lte, freq_hz: 0}]\n")
    assert_one_line_error(run_cli("generate", "--scene", bad, "--out", tmp_path / "b"),
                          "lte", "at least")
    bad.write_text("samp_rate: 1e6\ncenter_freq: 1e8\nduration_s: 0.01\n"
                   "emitters: [{signal: qpsk, freqq: 0}]\n")
    assert_one_line_error(run_cli("generate", "--scene", bad, "--out", tmp_path / "b"),
                          "freqq")
