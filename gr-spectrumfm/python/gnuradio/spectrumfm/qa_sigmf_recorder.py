"""QA for sigmf_recorder: real flowgraphs, recordings read back with the sigmf package."""

import importlib
import logging
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pmt
import pytest
import sigmf
from gnuradio import blocks, gr

from gnuradio.spectrumfm.pmtutil import GAP, RX_FREQ, RX_RATE, RX_TIME, dict_to_pmt
from gnuradio.spectrumfm.sigmf_recorder import sigmf_recorder
from spectrumfm import schema
from spectrumfm.errors import InputError
from sfm_testutil import full_disk_file

# The module itself (the package re-exports the block class under the module's name).
recorder_module = importlib.import_module("gnuradio.spectrumfm.sigmf_recorder")

RATE = 1e6


def iq(n, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)


def decision(start, task="technology", label="LTE", **extra):
    return schema.make_decision(task=task, label=label, score=0.75, sample_start=start,
                                sample_count=500, samp_rate=RATE, center_freq=100e6,
                                freq_lo=99.5e6, freq_hi=100.5e6, model="test/" + task, **extra)


class injector(gr.sync_block):
    """Passes samples through; posts its messages before its first output, and can hold
    the stream after ``hold_after`` samples until ``release`` is set."""

    def __init__(self, msgs=(), hold_after=None):
        gr.sync_block.__init__(self, "injector", in_sig=[np.complex64],
                               out_sig=[np.complex64])
        self.message_port_register_out(pmt.intern("decisions"))
        self.msgs = list(msgs)
        self.hold_after = hold_after
        self.release = threading.Event()

    def work(self, input_items, output_items):
        for msg in self.msgs:
            self.message_port_pub(pmt.intern("decisions"), msg)
        self.msgs = []
        n = len(output_items[0])
        if self.hold_after is not None:
            done = self.nitems_written(0)
            if done >= self.hold_after:
                self.release.wait(10)
                self.hold_after = None
            else:
                n = min(n, self.hold_after - done)
        output_items[0][:n] = input_items[0][:n]
        return n


def record(path, samples, msgs=(), tags=(), rec=None, **kw):
    """Run source -> injector -> recorder (and a vector sink beside it); return both."""
    rec = rec or sigmf_recorder(str(path), RATE, 100e6, **kw)
    src = blocks.vector_source_c(samples.tolist(), False, 1, list(tags))
    inj = injector(msgs)
    sink = blocks.vector_sink_c()
    tb = gr.top_block()
    tb.connect(src, inj, rec)
    tb.connect(inj, sink)
    tb.msg_connect(inj, "decisions", rec, "annotations")
    tb.run()
    return rec, np.array(sink.data(), dtype=np.complex64)


def read_back(path):
    meta = sigmf.sigmffile.fromfile(str(path))
    meta.validate()
    return meta


def validate_meta_only(path):
    """Schema check without the data: sigmf-python cannot memmap an empty data file."""
    with open(path) as fp:
        meta = sigmf.SigMFFile(metadata=fp.read())
    meta.validate()
    return meta


def test_001_samples_and_captures_round_trip(tmp_path):
    x = iq(5000)
    tags = [gr.tag_utils.python_to_tag((0, RX_TIME, pmt.make_tuple(
                pmt.from_uint64(1700000000), pmt.from_double(0.25)))),
            gr.tag_utils.python_to_tag((0, RX_RATE, pmt.from_double(2 * RATE))),  # as taken
            gr.tag_utils.python_to_tag((3000, RX_FREQ, pmt.from_double(101e6)))]
    rec, _ = record(tmp_path / "a.sigmf-meta", x, tags=tags, description="test")
    meta = read_back(tmp_path / "a.sigmf-meta")
    np.testing.assert_array_equal(meta.read_samples(), x)
    assert meta.get_global_field("core:datatype") == "cf32_le"
    assert meta.get_global_field("core:sample_rate") == 2 * RATE
    assert meta.get_global_field("core:recorder") == "gr-spectrumfm"
    assert meta.get_captures() == [
        {"core:sample_start": 0, "core:frequency": 100e6,
         "core:datetime": "2023-11-14T22:13:20.250000Z"},
        {"core:sample_start": 3000, "core:frequency": 101e6}]
    assert rec.stats()["samples_written"] == 5000
    assert rec.stats()["stopped_reason"] == "stopped"
    assert not os.path.exists(str(tmp_path / "a.sigmf-meta.tmp"))


def test_002_decisions_become_sorted_annotations(tmp_path):
    msgs = [dict_to_pmt(decision(3000)),
            dict_to_pmt(decision(1000, label="Bluetooth-LE-advertising", snr_db=7.5)),
            dict_to_pmt(decision(2000, task="occupancy", label="vacant")),
            dict_to_pmt(decision(2000, task="occupancy", label="occupied")),
            dict_to_pmt({"v": 1, "task": "technology"}), pmt.from_long(7)]
    rec, _ = record(tmp_path / "b", iq(5000), msgs)
    meta = read_back(tmp_path / "b.sigmf-meta")
    assert meta.get_global_field("core:extensions") == [
        {"name": "spectrumfm", "version": "1.0.0", "optional": True}]
    anns = meta.get_annotations()
    assert [a["core:sample_start"] for a in anns] == [1000, 2000, 3000]
    first, occupied, lte = anns
    assert first["core:label"] == "Bluetooth-LE-adverti"  # 20 characters
    assert first["spectrumfm:label"] == "Bluetooth-LE-advertising"
    assert first["spectrumfm:snr_db"] == 7.5
    assert occupied["core:label"] == "occupied" and occupied["spectrumfm:task"] == "occupancy"
    assert lte == {"core:sample_start": 3000, "core:sample_count": 500,
                   "core:freq_lower_edge": 99.5e6, "core:freq_upper_edge": 100.5e6,
                   "core:label": "LTE", "core:generator": "test/technology",
                   "core:comment": "technology", "spectrumfm:task": "technology",
                   "spectrumfm:score": 0.75}
    stats = rec.stats()
    assert stats["annotations"] == 3 and stats["vacant_skipped"] == 1
    assert stats["malformed"] == 2


def check_stopped_valid(path, x, rec, sink, caplog):
    """The stream went on, one error line was logged, and the files are valid."""
    np.testing.assert_array_equal(sink, x)  # the flowgraph ran to the end
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{rec.data_path}: No space left on device: recording stopped, "
                      "stream continues"]
    assert os.path.getsize(rec.data_path) % 8 == 0
    meta = read_back(path)
    n = rec.stats()["samples_written"]
    assert 0 < n < len(x) and meta.sample_count == n
    np.testing.assert_array_equal(meta.read_samples(), x[:n])
    for ann in meta.get_annotations():  # only samples that are in the file
        assert ann["core:sample_start"] + ann["core:sample_count"] <= n
    assert rec.stats()["stopped_reason"] == "No space left on device"
    return meta


def test_003_full_disk_on_a_real_tmpfs(tmp_path, caplog):
    """A real full disk: a 64 KiB tmpfs mounted for the test (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_004 simulates the full disk")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
            capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here; test_004 simulates the full disk")
    try:
        x = iq(20000)  # 160 kB of cf32
        msgs = [dict_to_pmt(decision(s)) for s in (1000, 5000, 15000)]
        with caplog.at_level(logging.INFO, logger="spectrumfm"):
            rec, sink = record(mnt / "full.sigmf-meta", x, msgs)
        meta = check_stopped_valid(mnt / "full.sigmf-meta", x, rec, sink, caplog)
        starts = [a["core:sample_start"] for a in meta.get_annotations()]
        assert starts == [s for s in (1000, 5000, 15000) if s < meta.sample_count]
        del meta  # its memmap holds the data file open
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_004_full_disk_simulated_partial_write(tmp_path, caplog):
    x = iq(20000)
    rec = sigmf_recorder(str(tmp_path / "sim.sigmf-data"), RATE, 100e6)
    rec._data = full_disk_file(rec._data, room=8 * 7001 + 3)  # 3 bytes of a sample
    msgs = [dict_to_pmt(decision(s)) for s in (1000, 6800, 9000)]
    with caplog.at_level(logging.INFO, logger="spectrumfm"):
        rec, sink = record(tmp_path / "sim", x, msgs, rec=rec)
    meta = check_stopped_valid(tmp_path / "sim.sigmf-meta", x, rec, sink, caplog)
    assert rec.stats()["samples_written"] == 7001
    anns = meta.get_annotations()
    assert [a["core:sample_start"] for a in anns] == [1000, 6800]
    assert anns[1]["core:sample_count"] == 201  # clipped to the last sample written


def test_005_unwritable_path_is_an_input_error(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "x.sigmf-meta"
    with pytest.raises(InputError, match=r"x\.sigmf-data: No such file or directory"):
        sigmf_recorder(str(missing), RATE)
    with pytest.raises(InputError, match="archive"):
        sigmf_recorder(str(tmp_path / "x.sigmf"), RATE)
    with pytest.raises(InputError, match="samp_rate"):
        sigmf_recorder(str(tmp_path / "y.sigmf-meta"), 0)


def test_006_metadata_is_valid_while_recording(tmp_path, monkeypatch):
    """What a crash mid-run would leave: the periodic metadata, valid, for the samples
    already written, with the annotations that fall inside them."""
    monkeypatch.setattr(recorder_module, "META_INTERVAL_S", 0.05)
    x = iq(8000)
    rec = sigmf_recorder(str(tmp_path / "live.sigmf-meta"), RATE, 100e6)
    validate_meta_only(tmp_path / "live.sigmf-meta")  # valid from construction on
    inj = injector([dict_to_pmt(decision(s)) for s in (1000, 6000)], hold_after=4000)
    tb = gr.top_block()
    tb.connect(blocks.vector_source_c(x.tolist()), inj, rec)
    tb.msg_connect(inj, "decisions", rec, "annotations")
    tb.start()
    try:
        deadline = time.monotonic() + 5
        while not validate_meta_only(tmp_path / "live.sigmf-meta").get_annotations():
            assert time.monotonic() < deadline, "no periodic metadata write"
            time.sleep(0.02)
        meta = read_back(tmp_path / "live.sigmf-meta")
        assert [a["core:sample_start"] for a in meta.get_annotations()] == [1000]
        assert meta.sample_count == 4000
    finally:
        inj.release.set()
        tb.wait()
    meta = read_back(tmp_path / "live.sigmf-meta")
    assert [a["core:sample_start"] for a in meta.get_annotations()] == [1000, 6000]
    np.testing.assert_array_equal(meta.read_samples(), x)


def test_007_gaps_open_capture_segments_that_count_the_lost_samples(tmp_path):
    tags = [gr.tag_utils.python_to_tag((1000, GAP, pmt.from_uint64(250))),
            gr.tag_utils.python_to_tag((3000, GAP, pmt.from_uint64(0)))]   # count unknown
    rec, _ = record(tmp_path / "g.sigmf-meta", iq(5000), tags=tags)
    caps = read_back(tmp_path / "g.sigmf-meta").get_captures()
    assert [c["core:sample_start"] for c in caps] == [0, 1000, 3000]
    assert caps[1]["core:global_index"] == 1250 and "core:global_index" not in caps[2]
    assert "lost" in caps[2]["core:comment"]
    assert rec.stats()["gaps"] == 2
