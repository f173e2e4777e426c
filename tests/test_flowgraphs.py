"""The GRC flowgraphs compile with grcc, and the headless twins run end to end: a replay,
and a live rtl_tcp flowgraph against the loopback rtl_tcp server."""

import os
import subprocess
import sys

import pytest

from sfm_testutil import ROOT, SCENE_FREQ, free_port, read_jsonl, write_sigmf
from spectrumfm.schema import validate_decision

FLOWGRAPHS = sorted((ROOT / "flowgraphs").glob("*.grc"))
GRC_ENV = dict(os.environ, GRC_BLOCKS_PATH=str(ROOT / ".venv/share/gnuradio/grc/blocks"))


def grcc(grc, out_dir):
    res = subprocess.run(["grcc", "-o", str(out_dir), str(grc)], capture_output=True, text=True,
                         env=GRC_ENV, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return out_dir / (grc.stem + ".py")


def test_every_gui_flowgraph_has_a_headless_twin():
    names = {g.stem for g in FLOWGRAPHS}
    assert {"replay", "live_rtltcp", "live_soapy"} <= names
    for name in names - {n for n in names if n.endswith("_headless")}:
        assert f"{name}_headless" in names, name


@pytest.mark.parametrize("grc", FLOWGRAPHS, ids=[g.stem for g in FLOWGRAPHS])
def test_grcc_compiles(tmp_path, grc):
    assert grcc(grc, tmp_path).exists()


def test_headless_replay_runs(tmp_path, scene):
    script = grcc(ROOT / "flowgraphs/replay_headless.grc", tmp_path)
    meta = write_sigmf(tmp_path / "scene", scene, "ci16_le")
    out = tmp_path / "decisions.jsonl"
    res = subprocess.run([sys.executable, str(script), "-r", str(meta), "-x", "1", "-d", str(out),
                          "-z", f"tcp://127.0.0.1:{free_port()}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    decisions = read_jsonl(out)
    assert decisions
    for d in decisions:
        validate_decision(d)
        assert d["center_freq"] == SCENE_FREQ  # from the recording's rx_freq tag
    assert {d["task"] for d in decisions} == {"occupancy", "emission"}


def test_headless_live_rtltcp_runs(tmp_path):
    import numpy as np

    from rtltcp_server import RtlTcpServer, tone_in_noise

    script = grcc(ROOT / "flowgraphs/live_rtltcp_headless.grc", tmp_path)
    rate = 250_000.0
    server = RtlTcpServer(tone_in_noise(1.0, rate), rate)
    out = tmp_path / "decisions.jsonl"
    try:
        res = subprocess.run([sys.executable, str(script), "-a", "127.0.0.1", "-p", str(server.port),
                              "-s", str(rate), "-f", "915e6", "-g", "28", "-t", "1", "-d", str(out),
                              "-z", f"tcp://127.0.0.1:{free_port()}"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        server.drop()
    assert res.returncode == 0, res.stderr
    assert server.values("freq") == [915_000_000] and server.values("gain") == [280]
    decisions = read_jsonl(out)
    assert decisions
    for d in decisions:
        validate_decision(d)
        assert (d["center_freq"], d["samp_rate"]) == (915e6, rate)   # from the source's tags
    assert np.isclose(max(d["time"] + d["sample_count"] / rate for d in decisions), 1.0, atol=0.06)
