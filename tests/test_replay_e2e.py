"""End to end: `spectrumfm run` replays a recording in every supported format.

Each test writes the same scene (a steady tone and a burst in noise, see sfm_testutil) in one
format, replays it with the installed command and checks the decisions file: every line
follows schema v1, the tone's channel is occupied, an emission box sits on each emitter.
"""

import json

import pytest

from sfm_testutil import (BURST_HZ, BURST_S, SCENE_FREQ, SCENE_RATE, TONE_HZ, read_jsonl, run_cli,
                      write_raw, write_sigmf, write_wav)
from spectrumfm.schema import validate_decision

STATS_KEYS = {"samples_in", "windows_analyzed", "windows_dropped", "latency_p50_s",
              "latency_p95_s", "overflows"}


def check_decisions(path, n_samples, center=SCENE_FREQ):
    decisions = read_jsonl(path)
    assert decisions, "no decisions written"
    for d in decisions:
        validate_decision(d)
        assert d["samp_rate"] == SCENE_RATE
        assert d["center_freq"] == center
        assert 0 <= d["sample_start"] <= n_samples
    tone = center + TONE_HZ
    occupancy = [d for d in decisions if d["task"] == "occupancy"]
    assert occupancy
    tone_cells = [d for d in occupancy if d["freq_lo"] <= tone < d["freq_hi"]]
    assert tone_cells and all(d["label"] == "occupied" for d in tone_cells)
    emissions = [d for d in decisions if d["task"] == "emission"]
    assert any(d["freq_lo"] - 5e3 <= tone <= d["freq_hi"] + 5e3 for d in emissions), "tone not boxed"
    burst = [d for d in emissions if d["freq_lo"] - 5e3 <= center + BURST_HZ <= d["freq_hi"] + 5e3]
    assert burst, "burst not boxed"
    start = min(d["sample_start"] for d in burst) / SCENE_RATE
    end = max(d["sample_start"] + d["sample_count"] for d in burst) / SCENE_RATE
    assert abs(start - BURST_S[0]) < 0.02 and abs(end - BURST_S[1]) < 0.02, (start, end)
    return decisions


def replay(tmp_path, path, *extra):
    out = tmp_path / "decisions.jsonl"
    stats = tmp_path / "stats.json"
    res = run_cli("run", path, "--fast", "--headless", "--model", "energy-detector",
                  "--decisions", out, "--stats", stats, *extra)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    st = json.loads(stats.read_text())
    assert STATS_KEYS <= st.keys()
    return out, st, res


@pytest.mark.parametrize("fmt", ["cf32", "cfile", "fc32", "ci16", "cs16", "cs8", "ci8", "cu8"])
def test_raw_formats(tmp_path, scene, fmt):
    path = write_raw(tmp_path / f"scene.{fmt}", scene, fmt)
    out, st, _ = replay(tmp_path, path, "--samp-rate", SCENE_RATE, "--freq", SCENE_FREQ)
    assert st["samples_in"] == scene.size
    check_decisions(out, scene.size)


def test_raw_format_option_overrides_extension(tmp_path, scene):
    path = write_raw(tmp_path / "capture.bin", scene, "cu8")
    out, _, _ = replay(tmp_path, path, "--format", "cu8", "-s", SCENE_RATE, "-f", SCENE_FREQ)
    check_decisions(out, scene.size)


@pytest.mark.parametrize("datatype", ["cf32_le", "ci16_le", "ci16_be", "ci8", "cu8"])
def test_sigmf(tmp_path, scene, datatype):
    meta = write_sigmf(tmp_path / "scene", scene, datatype)
    out, st, _ = replay(tmp_path, meta)
    assert st["samples_in"] == scene.size
    check_decisions(out, scene.size)


def test_sigmf_given_by_data_path(tmp_path, scene):
    write_sigmf(tmp_path / "scene", scene, "ci16_le")
    out, _, _ = replay(tmp_path, tmp_path / "scene.sigmf-data")
    check_decisions(out, scene.size)


def test_sigmf_archive(tmp_path, scene):
    import tarfile

    write_sigmf(tmp_path / "scene", scene, "ci16_le")
    archive = tmp_path / "scene.sigmf"
    with tarfile.open(archive, "w") as tar:
        for ext in (".sigmf-meta", ".sigmf-data"):
            tar.add(tmp_path / f"scene{ext}", arcname=f"scene/scene{ext}")
    out, _, _ = replay(tmp_path, archive)
    check_decisions(out, scene.size)


def test_wav_with_frequency_in_name(tmp_path, scene):
    path = write_wav(tmp_path / f"SDRSharp_20260101_120000Z_{int(SCENE_FREQ)}Hz_IQ.wav", scene)
    out, _, _ = replay(tmp_path, path)
    check_decisions(out, scene.size)


def test_duration_stops_early(tmp_path, scene):
    path = write_raw(tmp_path / "scene.cf32", scene, "cf32")
    _, st, _ = replay(tmp_path, path, "-s", SCENE_RATE, "--duration", "0.2")
    assert st["samples_in"] == int(0.2 * SCENE_RATE)


def test_record_writes_valid_sigmf_with_annotations(tmp_path, scene):
    from sigmf import sigmffile

    meta = write_sigmf(tmp_path / "scene", scene, "ci16_le")
    rec = tmp_path / "rec.sigmf-meta"
    out, _, _ = replay(tmp_path, meta, "--record", rec)
    sf = sigmffile.fromfile(str(rec))
    sf.validate()
    assert sf.sample_count == scene.size
    annotations = sf.get_annotations()
    assert annotations
    starts = [a["core:sample_start"] for a in annotations]
    assert starts == sorted(starts)
    occupied = [d for d in read_jsonl(out) if d["label"] != "vacant"]
    assert len(annotations) == len(occupied)


def test_summary_names_what_was_found(tmp_path, scene):
    path = write_raw(tmp_path / "scene.cf32", scene, "cf32")
    _, _, res = replay(tmp_path, path, "-s", SCENE_RATE, "-f", SCENE_FREQ)
    assert "Emissions found" in res.stdout
    assert f"{(SCENE_FREQ + TONE_HZ) / 1e6:.2f}"[:6] in res.stdout
