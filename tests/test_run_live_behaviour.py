"""How `spectrumfm run` behaves while it runs: Ctrl-C, real-time pacing, ZeroMQ output."""

import json
import signal
import subprocess
import threading
import time

import numpy as np
import zmq

from sfm_testutil import SCENE_RATE, SPECTRUMFM, free_port, read_jsonl, write_raw
from spectrumfm.schema import decode


def test_ctrl_c_stops_cleanly_and_keeps_what_was_written(tmp_path):
    # 20 s of signal at real time: we interrupt it after about 2 s.
    rng = np.random.default_rng(3)
    n = int(20 * SCENE_RATE)
    x = (0.01 * (rng.normal(size=n) + 1j * rng.normal(size=n)) + 0.2 * np.exp(2j * np.pi * 0.1 * np.arange(n)))
    path = write_raw(tmp_path / "long.cf32", x.astype(np.complex64), "cf32")
    out, stats, rec = tmp_path / "d.jsonl", tmp_path / "s.json", tmp_path / "rec.sigmf-meta"
    proc = subprocess.Popen([str(SPECTRUMFM), "run", str(path), "-s", str(SCENE_RATE), "--headless",
                             "--model", "energy-detector",
                             "--decisions", str(out), "--stats", str(stats), "--record", str(rec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    st = json.loads(stats.read_text())
    # Real-time pacing: well under the 20 s of the file went through.
    assert 0 < st["samples_in"] < n
    assert read_jsonl(out)
    from sigmf import sigmffile

    sf = sigmffile.fromfile(str(rec))
    sf.validate()
    assert 0 < sf.sample_count <= st["samples_in"]


def test_zmq_messages_reach_a_subscriber(tmp_path, scene):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    path = write_raw(tmp_path / "scene.cf32", np.tile(scene, 3), "cf32")
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 200)
    sub.connect(address)  # before the publisher exists: ZMQ reconnects by itself
    got, stop = [], threading.Event()

    def listen():
        while not stop.is_set():
            try:
                got.append(decode(sub.recv_multipart()))
            except zmq.Again:
                continue

    t = threading.Thread(target=listen)
    t.start()
    try:
        res = subprocess.run([str(SPECTRUMFM), "run", str(path), "-s", str(SCENE_RATE), "--headless",
                              "--model", "energy-detector",
                              "--realtime", "--zmq", address, "-q"],
                             capture_output=True, text=True, timeout=60)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
        sub.close()
    assert res.returncode == 0, res.stderr
    topics = [m.topic for m in got]
    assert {"spectrum", "decision", "status", "eos"} <= set(topics), set(topics)
    rows = [m for m in got if m.topic == "spectrum"]
    assert rows[0].row.size == rows[0].header["fft_size"] == 1024
    seqs = [m.header["seq"] for m in rows]
    assert seqs == sorted(seqs)
    assert topics[-1] == "eos" or "eos" in topics[-5:]
