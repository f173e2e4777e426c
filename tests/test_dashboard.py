"""The dashboard: real Qt widgets (offscreen), real ZeroMQ sockets, the installed command."""

import json
import os
import subprocess
import threading
import time

import numpy as np
import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt is imported

zmq = pytest.importorskip("zmq")
QtWidgets = pytest.importorskip("PyQt5.QtWidgets")
QtGui = pytest.importorskip("PyQt5.QtGui")

from spectrumfm import schema  # noqa: E402
from spectrumfm_apps.dashboard_io import Counters, RowRing, Subscriber  # noqa: E402
from spectrumfm_apps.dashboard_plots import image_luma  # noqa: E402
from spectrumfm_apps.dashboard_window import MainWindow, export_decisions  # noqa: E402

from sfm_testutil import (  # noqa: E402
    BURST_HZ, BURST_S, SCENE_FREQ, SCENE_RATE, SPECTRUMFM, TONE_HZ, free_port, make_scene,
    run_cli, write_sigmf)

BINS = 256


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication(["test"])


class Publisher:
    """A PUB socket sending schema-v1 rows (a carrier in bin ``BINS // 4``) and decisions."""

    def __init__(self, address, freq=100e6, rate=1e6, bins=BINS):
        self.sock = zmq.Context.instance().socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for _ in range(50):      # a just-closed publisher may still hold the port a moment
            try:
                self.sock.bind(address)
                break
            except zmq.ZMQError:
                time.sleep(0.05)
        else:
            self.sock.bind(address)
        self.freq, self.rate, self.bins, self.seq = freq, rate, bins, 0

    def row(self):
        row = np.full(self.bins, -100.0, np.float32)
        row[self.bins // 4] = -30.0
        head = {"center_freq": self.freq, "samp_rate": self.rate, "fft_size": self.bins,
                "sample_index": self.seq * self.bins, "samples_per_row": self.bins,
                "time": self.seq * self.bins / self.rate}
        self.sock.send_multipart(schema.encode(schema.TOPIC_SPECTRUM, head, self.seq, row))
        if self.seq % 10 == 0:
            lo = self.freq - self.rate / 4 - self.rate / 50
            d = schema.make_decision(task="emission", label="LTE", score=0.9,
                                     sample_start=self.seq * self.bins, sample_count=self.bins * 5,
                                     samp_rate=self.rate, center_freq=self.freq, freq_lo=lo,
                                     freq_hi=lo + self.rate / 25, model="test")
            self.sock.send_multipart(schema.encode(schema.TOPIC_DECISION, d, self.seq // 10))
        self.seq += 1

    def close(self):
        self.sock.close(0)


def pump(app, win, sub, until, timeout=10.0, publisher=None):
    """Process Qt events and drain the subscriber until ``until()``; False on timeout."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if publisher is not None:
            publisher.row()
        win.safe_tick(sub.drain())
        app.processEvents()
        if until():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def wired(app):
    """A window and its subscriber connected to a free port (no publisher yet)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    counters = Counters()
    win = MainWindow(address, history=50, max_boxes=10, counters=counters)
    win.show()
    sub = Subscriber(address, counters)
    sub.start()
    yield app, win, sub, address
    sub.stop()
    sub.join(2)
    win.close()


def test_ring_buffer_view_is_ordered_and_not_a_copy():
    ring = RowRing(4, 3)
    for i in range(6):
        ring.push(np.full(3, i, np.float32))
    view = ring.view()
    assert view[:, 0].tolist() == [2, 3, 4, 5]
    assert np.shares_memory(view, ring.buf)
    assert ring.newest(2)[:, 0].tolist() == [4, 5]


def test_window_builds(app):
    win = MainWindow("tcp://127.0.0.1:1")
    win.show()
    app.processEvents()
    assert win.stats()["rows"] == 0
    assert "waiting" in win.status_text()
    win.close()


def test_rows_and_decisions_from_a_real_publisher(wired):
    app, win, sub, address = wired
    pub = Publisher(address)
    try:
        assert pump(app, win, sub, lambda: win.ring is not None and win.ring.total >= 30
                    and win.waterfall.boxes, publisher=pub)
    finally:
        pub.close()
    image = win.waterfall.image.image
    assert image.shape == (50, BINS)
    assert image[-1, BINS // 4] == pytest.approx(-30.0)
    assert np.median(image[-1]) == pytest.approx(-100.0)
    rect = next(iter(win.waterfall.boxes.values()))[0].rect()
    assert rect.left() < 100e6 - 1e6 / 4 < rect.right()     # the box sits on the carrier
    assert len(win.waterfall.boxes) <= 10
    assert win.model.rowCount() >= 1 and win.counters.malformed == 0
    for plot in (win.spectrum, win.waterfall):     # linked x axes, the whole band
        x0, x1 = plot.getPlotItem().vb.viewRange()[0]
        assert x0 == pytest.approx(99.5e6, abs=5e3) and x1 == pytest.approx(100.5e6, abs=5e3)


def test_late_then_restarted_publisher_is_followed(wired):
    app, win, sub, address = wired
    time.sleep(0.3)                       # the dashboard waits with nobody publishing
    pub = Publisher(address, freq=100e6)
    try:
        assert pump(app, win, sub, lambda: win.layout_key == (100e6, 1e6, BINS), publisher=pub)
    finally:
        pub.close()
    pub = Publisher(address, freq=433.92e6, rate=250e3, bins=128)   # restarted, retuned
    try:
        assert pump(app, win, sub, lambda: win.layout_key == (433.92e6, 250e3, 128)
                    and win.ring.total >= 5, publisher=pub)
    finally:
        pub.close()
    x0, x1 = win.waterfall.getPlotItem().vb.viewRange()[0]
    assert x0 < 433.92e6 < x1 and x1 - x0 < 300e3
    assert win.waterfall.image.image.shape == (50, 128)


def test_malformed_counted_and_skipped_newer_version_accepted(wired):
    app, win, sub, address = wired
    pub = Publisher(address)
    bad = [[b"spectrum", b"{not json"], [b"nonsense", b"{}"], [b"decision", b'{"v": 1}'],
           [b"spectrum", b'{"v": 1, "fft_size": 8}', b"\0" * 12], [b"status"]]
    try:
        assert pump(app, win, sub, lambda: win.ring is not None, publisher=pub)
        for frames in bad:
            pub.sock.send_multipart(frames)
        newer = {"v": 2, "center_freq": 100e6, "samp_rate": 1e6, "fft_size": BINS,
                 "sample_index": 10 ** 6, "samples_per_row": BINS, "time": 1.0,
                 "a_new_field": {"x": 1}}
        row = np.full(BINS, -55.0, np.float32)
        pub.sock.send_multipart([b"spectrum", json.dumps({**newer, "seq": 10 ** 4}).encode(),
                                 row.tobytes()])
        assert pump(app, win, sub, lambda: win.counters.malformed >= len(bad)
                    and win.last_row[1][0] == -55.0)
    finally:
        pub.close()
    assert win.counters.malformed == len(bad)
    assert "malformed 5" in win.status_text()


def test_export_decisions(tmp_path):
    d = schema.make_decision(task="emission", label="LTE", score=0.5, sample_start=0,
                             sample_count=10, samp_rate=1e6, center_freq=1e8, freq_lo=1e8,
                             freq_hi=1.001e8, model="m")
    assert export_decisions([{**d, "_row": 3.0}], tmp_path / "d.jsonl") == 1
    line = json.loads((tmp_path / "d.jsonl").read_text())
    schema.validate_decision(line)
    assert "_row" not in line
    export_decisions([d], str(tmp_path / "d.csv"))
    assert (tmp_path / "d.csv").read_text().splitlines()[0].startswith("v,task,label,score")


def _feed(address, stop):
    pub = Publisher(address)
    while not stop.is_set():
        pub.row()
        time.sleep(0.01)
    pub.close()


def test_screenshot_is_written_and_not_blank(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(address, stop), daemon=True)
    feeder.start()
    png, stats = tmp_path / "shot.png", tmp_path / "stats.json"
    try:
        res = run_cli("dashboard", "--connect", address, "--screenshot", png, "--after", 2,
                      "--stats", stats, env={"QT_QPA_PLATFORM": "offscreen"}, timeout=60)
    finally:
        stop.set()
        feeder.join()
    assert res.returncode == 0, res.stderr
    luma = image_luma(QtGui.QImage(str(png)))
    assert luma.shape[0] > 300 and luma.std() > 10
    counts = json.loads(stats.read_text())
    assert counts["rows"] > 10 and counts["boxes_drawn"] >= 1 and counts["malformed"] == 0


def test_bad_address_and_no_display():
    res = run_cli("dashboard", "--connect", "tcp://127.0.0.1:99999")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--connect" in res.stderr
    res = run_cli("dashboard", "--connect", "tcp://127.0.0.1:5557", timeout=30,
                  env={"QT_QPA_PLATFORM": ""})   # no DISPLAY (run_cli drops it), no offscreen
    assert res.returncode == 2
    assert res.stderr.strip() == ("spectrumfm: error: no display; use --headless on the "
                                  "runner or set DISPLAY")


def test_benchmark_prints_fps():
    res = run_cli("dashboard", "--benchmark", 1, "--bins", 1024, "--json", timeout=60)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["fps"] > 1 and result["boxes_drawn"] >= 1


def _column_luma(luma, stats, freq, rows=None):
    """Mean luminance of the screenshot's waterfall column at ``freq`` (Hz), over the
    screen rows of waterfall rows ``rows`` (counted from the first received) or all."""
    x, y, w, h = (int(round(v)) for v in stats["waterfall_px"])
    f0, f1 = stats["x_range"]
    col = x + int(round((freq - f0) / (f1 - f0) * w))
    top, bottom = y, y + h
    if rows is not None:
        first = stats["rows"] - stats["history"]       # image row 0 (oldest) in received rows
        px = lambda r: y + h - (r - first) / stats["history"] * h  # noqa: E731
        top, bottom = int(px(rows[1])), int(px(rows[0]))
    return float(luma[top:bottom, col - 1:col + 2].mean())


def test_replay_shows_emitters_and_boxes(tmp_path):
    """A real replay (`spectrumfm run --zmq --realtime`) watched by the dashboard."""
    meta = write_sigmf(tmp_path / "rec", make_scene(seconds=4.0))
    address = f"tcp://127.0.0.1:{free_port()}"
    png, stats_path = tmp_path / "replay.png", tmp_path / "stats.json"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    dash = subprocess.Popen([str(SPECTRUMFM), "dashboard", "--connect", address, "--history",
                             "130", "--screenshot", str(png), "--after", "10", "--stats",
                             str(stats_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in dash.stderr:              # its socket is up before the engine starts
            if "dashboard watching" in line:
                break
        run = run_cli("run", meta, "--zmq", address, "--realtime", "-q", "--model",
                      "energy-detector", timeout=60)
        assert run.returncode == 0, run.stderr
        assert dash.wait(timeout=30) == 0, dash.stderr.read()
    finally:
        dash.kill()
    stats = json.loads(stats_path.read_text())
    assert stats["layout"][:2] == [SCENE_FREQ, SCENE_RATE]
    assert stats["rows"] > 100 and stats["boxes_drawn"] >= 2, stats
    luma = image_luma(QtGui.QImage(str(png)))
    noise = _column_luma(luma, stats, SCENE_FREQ - 110e3)
    assert _column_luma(luma, stats, SCENE_FREQ + TONE_HZ) > noise + 20      # the carrier
    spr = stats["samples_per_row"]
    burst = [(t * SCENE_RATE - stats["first_sample"]) / spr for t in BURST_S]
    middle = ((burst[0] + burst[1]) / 2 - 1, (burst[0] + burst[1]) / 2 + 1)
    assert (_column_luma(luma, stats, SCENE_FREQ + BURST_HZ, middle)
            > _column_luma(luma, stats, SCENE_FREQ - 110e3, middle) + 20)    # the burst


def test_dashboard_imports_no_gnuradio():
    code = ("import sys, spectrumfm_apps.dashboard, spectrumfm_apps.dashboard_window, "
            "spectrumfm_apps.dashboard_bench; "
            "sys.exit(any(m.split('.')[0] in ('gnuradio', 'pmt', 'torch') for m in sys.modules))")
    res = subprocess.run([str(SPECTRUMFM.parent / "python"), "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def _anomaly(seq, score, rate=1e6, freq=100e6):
    d = schema.make_decision(task="anomaly", label="anomaly" if score > 0.5 else "normal",
                             score=score, sample_start=seq * BINS, sample_count=BINS * 4,
                             samp_rate=rate, center_freq=freq, freq_lo=freq - rate / 2,
                             freq_hi=freq + rate / 2, model="test")
    return schema.encode(schema.TOPIC_DECISION, d, 1000 + seq)


def test_anomaly_timeline_and_alarm_from_a_real_publisher(wired):
    app, win, sub, address = wired
    assert win.anomaly.threshold == 0.5
    pub = Publisher(address)
    scores = [0.1, 0.2, 0.3, 0.9, 0.2]
    try:
        assert pump(app, win, sub, lambda: win.ring is not None, publisher=pub)
        for i, score in enumerate(scores):
            pub.sock.send_multipart(_anomaly(pub.seq + i, score))
        assert pump(app, win, sub, lambda: len(win.anomaly.scores) >= len(scores),
                    publisher=pub)
    finally:
        pub.close()
    assert list(win.anomaly.scores) == scores
    x, y = win.anomaly.curve.getData()
    assert list(y) == scores and np.all(np.diff(x) > 0)        # over signal time
    ax, ay = win.anomaly.alarm_points.getData()
    assert list(ay) == [0.9] and win.anomaly.alarms == 1       # the one above threshold
    assert win.anomaly.threshold_line.value() == 0.5
    assert "alarms 1" in win.status_text()
    win.anomaly.set_threshold(0.25)                            # the line and points follow
    assert sorted(win.anomaly.alarm_points.getData()[1]) == [0.3, 0.9]


def test_anomaly_threshold_option(tmp_path):
    res = run_cli("dashboard", "--benchmark", 0.3, "--bins", 256, "--anomaly-threshold", 0.8,
                  "--json", timeout=60)
    assert res.returncode == 0, res.stderr


def test_legend_lists_the_labels_of_boxes_drawn(app):
    win = MainWindow("tcp://127.0.0.1:1", history=50)
    win.show()
    rows = [schema.Message("spectrum", {"v": 1, "seq": 0, "center_freq": 100e6,
                                        "samp_rate": 1e6, "fft_size": BINS,
                                        "sample_index": 0, "samples_per_row": BINS},
                           np.full(BINS, -100.0, np.float32))]
    msgs = list(rows)
    for i, label in enumerate(["LTE", "WiFi", "LTE", "FM"]):
        d = schema.make_decision(task="technology", label=label, score=0.8, sample_start=0,
                                 sample_count=BINS, samp_rate=1e6, center_freq=100e6,
                                 freq_lo=99.6e6 + i * 0.2e6, freq_hi=99.65e6 + i * 0.2e6,
                                 model="m")
        msgs.append(schema.Message("decision", {**d, "type": "decision", "seq": i}))
    win.tick(msgs)
    app.processEvents()
    assert win.waterfall.labels == ["LTE", "WiFi", "FM"]
    text = win.legend.text()
    assert all(label in text for label in ("LTE", "WiFi", "FM")) and text.count("LTE") == 1
    assert sorted(win.stats()["labels"]) == ["FM", "LTE", "WiFi"]
    win.close()


def test_history_spinbox_rebuilds_the_ring(app):
    win = MainWindow("tcp://127.0.0.1:1", history=50)
    win.show()
    for n in range(60):
        row = np.full(BINS, -100.0 + n, np.float32)
        win.tick([schema.Message("spectrum", {"v": 1, "seq": n, "center_freq": 100e6,
                                              "samp_rate": 1e6, "fft_size": BINS,
                                              "sample_index": n * BINS,
                                              "samples_per_row": BINS}, row)])
    assert win.ring.rows == 50
    win.history_box.setValue(20)
    app.processEvents()
    assert win.history == 20 and win.ring.rows == 20 and win.ring.total == 60
    assert win.ring.view()[:, 0].tolist() == [-100.0 + n for n in range(40, 60)]
    assert win.waterfall.image.image.shape == (20, BINS)
    win.history_box.setValue(100)                     # longer: the newest rows are kept
    assert win.ring.rows == 100 and win.ring.view()[-1, 0] == -100.0 + 59
    assert win.stats()["history"] == 100
    win.close()


def test_level_spinboxes_set_the_image_levels(app):
    win = MainWindow("tcp://127.0.0.1:1", history=50)
    win.show()
    win.tick([schema.Message("spectrum", {"v": 1, "seq": 0, "center_freq": 100e6,
                                          "samp_rate": 1e6, "fft_size": BINS,
                                          "sample_index": 0, "samples_per_row": BINS},
                             np.full(BINS, -100.0, np.float32))])
    win.level_lo.setValue(-110.0)
    win.level_hi.setValue(-35.0)
    app.processEvents()
    assert win.waterfall.levels() == pytest.approx((-110.0, -35.0))
    assert tuple(win.waterfall.image.getLevels()) == pytest.approx((-110.0, -35.0))
    win.waterfall.set_levels(-90.0, -10.0)            # the colour bar's levels: boxes follow
    assert (win.level_lo.value(), win.level_hi.value()) == (-90.0, -10.0)
    win.auto_levels()
    lo, hi = win.waterfall.levels()
    assert (win.level_lo.value(), win.level_hi.value()) == pytest.approx((lo, hi), abs=0.05)
    win.close()


def test_crosshair_follows_the_cursor_on_both_plots(app):
    win = MainWindow("tcp://127.0.0.1:1", history=50)
    win.show()
    from PyQt5 import QtCore
    win.spectrum.move_cursor(QtCore.QPointF(100.1e6, -50.0))
    assert win.spectrum.vline.value() == 100.1e6 and win.spectrum.hline.value() == -50.0
    assert win.waterfall.vline.value() == 100.1e6 and win.waterfall.vline.isVisible()
    assert "-50.0 dB" in win.spectrum.cursor.textItem.toPlainText()
    win.close()


def test_scan_shows_the_whole_range_as_a_panorama(wired):
    """Status messages with scan fields: rows at three centres fill their own segments of
    one wide row spanning scan_start..scan_stop, with no rebuild between steps; a status
    without scan fields goes back to the normal view."""
    app, win, sub, address = wired
    start, stop, rate = 99.5e6, 102.5e6, 1e6
    centers, levels = (100e6, 101e6, 102e6), (-90.0, -70.0, -50.0)
    bin_hz = rate / BINS
    pub = Publisher(address)
    seq = 0

    def status(step=None):
        head = {"source": "test"}
        if step is not None:
            head.update(scan_start=start, scan_stop=stop, scan_step=step, scan_steps=3,
                        scan_center=centers[step])
        pub.sock.send_multipart(schema.encode(schema.TOPIC_STATUS, head, seq))

    def row(freq, level):
        nonlocal seq
        head = {"center_freq": freq, "samp_rate": rate, "fft_size": BINS,
                "sample_index": seq * BINS, "samples_per_row": BINS, "time": seq * BINS / rate}
        pub.sock.send_multipart(schema.encode(schema.TOPIC_SPECTRUM, head, seq,
                                              np.full(BINS, level, np.float32)))
        seq += 1

    def segment(image_row, freq):
        lo = int(round((freq - BINS // 2 * bin_hz - start) / bin_hz))
        return image_row[max(lo, 0) + 2:lo + BINS - 2]

    try:
        # Wait for the subscription to be up, then for the panorama on the first step.
        assert pump(app, win, sub, lambda: (status(0), row(centers[0], levels[0]))
                    and win.pano is not None and win.ring.total >= 3)
        resets = win.stats()["resets"]
        total = win.ring.total
        for step in (1, 2):
            status(step)
            for _ in range(3):
                row(centers[step], levels[step])
        assert pump(app, win, sub, lambda: win.last_seq.get("spectrum") == seq - 1)
        assert win.ring.total >= total + 6
        stats = win.stats()
        assert stats["resets"] == resets                       # retunes rebuilt nothing
        assert stats["scan"] == [start, stop] and stats["layout"][0] == "scan"
        image = win.waterfall.image.image
        assert image.shape == (50, int(np.ceil((stop - start) / bin_hz)) + 1)
        newest = image[-1]
        for freq, level in zip(centers, levels):               # each step in its own segment
            assert np.all(segment(newest, freq) == level)
        # The row before the third step's: only the first two steps' levels, so far.
        before = image[-4]
        assert np.all(segment(before, centers[1]) == levels[1])
        assert np.all(segment(before, centers[0]) == levels[0])
        assert np.all(segment(before, centers[2]) == win.ring.floor)    # never seen yet
        for plot in (win.spectrum, win.waterfall):             # the whole range, in Hz
            x0, x1 = plot.getPlotItem().vb.viewRange()[0]
            assert x0 <= start + bin_hz and x1 >= stop - bin_hz and x1 - x0 < 3.1e6
        assert "scan" in win.status_text()
        status(None)                                           # the scan is over
        assert pump(app, win, sub, lambda: (row(100e6, -60.0), win.layout_key)[1]
                    == (100e6, rate, BINS))
        assert win.pano is None and win.waterfall.image.image.shape == (50, BINS)
        x0, x1 = win.waterfall.getPlotItem().vb.viewRange()[0]
        assert x1 - x0 < 1.1e6
    finally:
        pub.close()
