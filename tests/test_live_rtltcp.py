"""`spectrumfm run --source rtl_tcp` against a loopback rtl_tcp server (tests/rtltcp_server.py):
tuning, decisions, a server that drops or stalls, --reconnect, Ctrl-C, --scan, --capture-on."""

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from sigmf import sigmffile

from rtltcp_server import RtlTcpServer
from sfm_testutil import ROOT, SPECTRUMFM, free_port, read_jsonl, run_cli
from spectrumfm.schema import validate_decision

RATE = 250_000.0
FREQ = 433.92e6
TONE_HZ = 50_000.0


def tone(seconds=1.0, seed=4):
    """A steady tone at +50 kHz in noise (the server loops it)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = 0.02 * (rng.normal(size=n) + 1j * rng.normal(size=n))
    x += 0.3 * np.exp(2j * np.pi * TONE_HZ / RATE * np.arange(n))
    return x.astype(np.complex64)


@pytest.fixture
def server():
    srv = RtlTcpServer(tone(), RATE)
    yield srv
    srv.drop()


def start(server, tmp_path, *extra):
    """`spectrumfm run` on the server in the background; returns (process, outputs)."""
    out = {"decisions": tmp_path / "d.jsonl", "record": tmp_path / "rec.sigmf-meta",
           "stats": tmp_path / "s.json"}
    cmd = [str(SPECTRUMFM), "run", "--source", "rtl_tcp", "--args", f"127.0.0.1:{server.port}",
           "-s", str(RATE), "--headless", "-q", "--model", "energy-detector"]
    for name, path in out.items():
        cmd += [f"--{name}", str(path)]
    proc = subprocess.Popen(cmd + [str(a) for a in extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    return proc, out


def finish(proc, timeout=30):
    stdout, stderr = proc.communicate(timeout=timeout)
    assert "Traceback" not in stderr, stderr
    return stderr


def error_lines(stderr):
    return [line for line in stderr.splitlines() if "error" in line]


def check_outputs(out, samples_in=None, exact=True):
    """Every decision valid; the SigMF recording valid and as long as what came in (at
    most that after Ctrl-C: samples still in flight are not recorded)."""
    decisions = read_jsonl(out["decisions"])
    for d in decisions:
        validate_decision(d)
    sf = sigmffile.fromfile(str(out["record"]))
    sf.validate()
    if samples_in is not None:
        assert sf.sample_count == samples_in if exact else 0 < sf.sample_count <= samples_in
    return decisions, sf


def assert_tone_found(decisions):
    """The tone's channel is occupied; channels well away from it are not (a window's
    leakage may touch the next channel now and then)."""
    occupancy = [d for d in decisions if d["task"] == "occupancy"]
    on = [d for d in occupancy if d["freq_lo"] <= d["center_freq"] + TONE_HZ < d["freq_hi"]]
    far = [d for d in occupancy
           if abs((d["freq_lo"] + d["freq_hi"]) / 2 - d["center_freq"] - TONE_HZ) > RATE / 8]
    assert on and sum(d["label"] == "occupied" for d in on) >= 0.9 * len(on)
    assert far and sum(d["label"] == "occupied" for d in far) <= 0.01 * len(far) + 1


def test_runner_tunes_the_server_and_decisions_carry_its_tuning(server, tmp_path):
    proc, out = start(server, tmp_path, "-f", FREQ, "-g", "19.7", "--ppm", "-3",
                      "--duration", "1.5", "--capture-on", "task=occupancy,score>0.99",
                      "--capture-dir", tmp_path / "snips")
    stderr = finish(proc)
    assert proc.returncode == 0, stderr
    assert server.values("rate") == [250_000]
    assert server.values("freq") == [433_920_000]
    assert server.values("gain_mode") == [1] and server.values("gain") == [197]
    assert server.values("ppm") == [-3]
    stats = json.loads(out["stats"].read_text())
    assert stats["samples_in"] == int(1.5 * RATE)
    assert stats["overflows"] == 0 and stats["reconnects"] == 0
    decisions, sf = check_outputs(out, stats["samples_in"])
    assert decisions and {(d["center_freq"], d["samp_rate"]) for d in decisions} == {(FREQ, RATE)}
    assert_tone_found(decisions)
    assert sf.get_captures()[0]["core:frequency"] == FREQ
    snips = sorted((tmp_path / "snips").glob("*.sigmf-meta"))
    assert len(snips) == 1                    # the steady tone keeps one snippet open
    snip = sigmffile.fromfile(str(snips[0]))
    snip.validate()
    assert snip.get_captures()[0]["core:frequency"] == FREQ and snip.get_annotations()


def test_server_not_listening_is_one_clear_error(tmp_path):
    port = free_port()
    res = run_cli("run", "--source", "rtl_tcp", "--args", f"127.0.0.1:{port}", "-q",
                  cwd=tmp_path, timeout=30)
    assert res.returncode == 3
    assert error_lines(res.stderr) == [f"spectrumfm: error: rtl_tcp 127.0.0.1:{port}: "
                                       f"connection refused (is rtl_tcp running there?)"]


def test_server_dropping_mid_stream_ends_the_run_with_files_kept(server, tmp_path):
    proc, out = start(server, tmp_path, "-f", FREQ)
    assert server.wait_for(lambda: server.bytes_sent > 1.5 * RATE * 2)
    server.drop()
    dropped = time.monotonic()
    stderr = finish(proc)
    assert time.monotonic() - dropped < 10
    assert proc.returncode == 3, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr
    assert f"rtl_tcp 127.0.0.1:{server.port}: connection closed by the server" in errors[0]
    stats = json.loads(out["stats"].read_text())
    decisions, sf = check_outputs(out, stats["samples_in"])
    # Decided up to the end: the last slot's decisions are on disk.
    last = max(d["time"] + d["sample_count"] / RATE for d in decisions)
    assert last > stats["samples_in"] / RATE - 0.1
    assert sf.get_annotations()


def test_a_stalled_server_is_noticed_by_the_watchdog(server, tmp_path):
    proc, out = start(server, tmp_path, "-f", FREQ, "--watchdog", "1.5")
    assert server.wait_for(lambda: server.bytes_sent > 1.0 * RATE * 2)
    server.stall()
    stalled = time.monotonic()
    stderr = finish(proc)
    assert time.monotonic() - stalled < 1.5 + 3
    assert proc.returncode == 3, stderr
    assert "no samples for 1.5 s" in error_lines(stderr)[0]
    check_outputs(out, json.loads(out["stats"].read_text())["samples_in"])


def test_reconnect_resumes_when_the_server_comes_back(server, tmp_path):
    proc, out = start(server, tmp_path, "-f", FREQ, "--reconnect", "--duration", "3")
    assert server.wait_for(lambda: server.bytes_sent > 1.0 * RATE * 2)
    server.drop()
    time.sleep(1.0)
    server.listen()
    stderr = finish(proc)
    assert proc.returncode == 0, stderr
    assert "reconnecting" in stderr and "reconnected after" in stderr
    assert server.connections == 2
    assert server.values("freq") == [433_920_000] * 2     # settings sent again
    stats = json.loads(out["stats"].read_text())
    assert stats["reconnects"] == 1 and stats["samples_in"] == int(3 * RATE)
    decisions, sf = check_outputs(out, stats["samples_in"])
    gap = [c for c in sf.get_captures() if "core:global_index" in c]
    assert len(gap) == 1                                   # the outage is a capture segment
    after = [d for d in decisions if d["sample_start"] >= gap[0]["core:sample_start"]]
    assert after and any(d["label"] == "occupied" for d in after)
    # Decision time counts the outage (estimated from the wall clock).
    assert min(d["time"] for d in after) > gap[0]["core:sample_start"] / RATE + 0.5


def test_ctrl_c_stops_cleanly(server, tmp_path):
    proc, out = start(server, tmp_path, "-f", FREQ)
    assert server.wait_for(lambda: server.bytes_sent > 1.0 * RATE * 2)
    proc.send_signal(signal.SIGINT)
    stderr = finish(proc)
    assert proc.returncode == 0, stderr
    assert not error_lines(stderr)
    stats = json.loads(out["stats"].read_text())
    decisions, _ = check_outputs(out, stats["samples_in"], exact=False)
    assert decisions


def subscribe(address):
    """Collect the ZeroMQ messages published at address, in a thread; returns (list, stop)."""
    import zmq

    from spectrumfm.schema import decode

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"status")
    sub.setsockopt(zmq.RCVTIMEO, 200)
    sub.connect(address)
    got, done = [], threading.Event()

    def listen():
        while not done.is_set():
            try:
                got.append(decode(sub.recv_multipart()))
            except zmq.Again:
                continue
        sub.close()

    t = threading.Thread(target=listen)
    t.start()
    return got, lambda: (done.set(), t.join())


def test_scan_retunes_and_decisions_carry_each_step(server, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    got, stop = subscribe(address)
    try:
        proc, out = start(server, tmp_path, "--scan", "433.8e6:434.2e6", "--dwell", "0.5",
                          "--duration", "2.2", "--zmq", address)
        stderr = finish(proc)
    finally:
        stop()
    assert proc.returncode == 0, stderr
    radio = [m.header for m in got if "source" in m.header]   # the radio's status, each second
    assert radio and radio[-1]["source"] == f"rtl_tcp 127.0.0.1:{server.port}"
    assert radio[-1]["overflows"] == 0 and radio[-1]["connected"] is True
    assert (radio[-1]["scan_start"], radio[-1]["scan_stop"], radio[-1]["scan_steps"]) == \
        (433.8e6, 434.2e6, 2)
    centers = [433.9e6, 434.1e6]                 # 400 kHz in steps of 0.8 x 250 kHz
    tuned = server.values("freq")
    assert tuned[0] == 433_800_000 and tuned[1:4] == [433_900_000, 434_100_000, 433_900_000]
    decisions, sf = check_outputs(out)
    assert {d["center_freq"] for d in decisions} == set(centers)
    for d in decisions:
        lo, hi = d["center_freq"] - RATE / 2, d["center_freq"] + RATE / 2
        assert lo <= d["freq_lo"] <= d["freq_hi"] <= hi
    for center in centers:    # the server's tone, found at its place in each step
        assert_tone_found([d for d in decisions if d["center_freq"] == center])
    assert {c["core:frequency"] for c in sf.get_captures()} >= set(centers)


def test_bad_capture_expression_is_refused(tmp_path):
    res = run_cli("run", "--source", "rtl_tcp", "--args", "127.0.0.1:1", "--capture-on",
                  "snr_db>loud", cwd=tmp_path)
    assert res.returncode == 2
    assert error_lines(res.stderr) == ["spectrumfm: error: --capture-on snr_db>loud: "
                                       "snr_db>loud: snr_db is a number, 'loud' is not"]


def test_server_runs_alone_for_users(tmp_path):
    """The loopback server is also a way to try the live path without a radio."""
    port = free_port()
    script = ROOT / "tests" / "rtltcp_server.py"
    srv = subprocess.Popen([sys.executable, str(script), "--port", str(port), "--rate", str(RATE)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert "rtl_tcp server on 127.0.0.1" in srv.stdout.readline()
        res = run_cli("run", "--source", "rtl_tcp", "--args", f"127.0.0.1:{port}", "-s", RATE,
                      "--duration", "0.5", "-q", "--model", "energy-detector", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    finally:
        srv.terminate()
        srv.wait(5)

