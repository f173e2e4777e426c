"""QA for decision_file_sink: decisions from a running flowgraph into a JSONL file."""

import json
import logging
import threading
import time

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio.spectrumfm.decision_file_sink import decision_file_sink
from gnuradio.spectrumfm.pmtutil import dict_to_pmt
from spectrumfm import schema
from spectrumfm.errors import InputError
from sfm_testutil import full_disk_file


def decision(i, **extra):
    return schema.make_decision(task="occupancy", label="occupied", score=0.9,
                                sample_start=1024 * i, sample_count=1024, samp_rate=2.4e6,
                                center_freq=100e6, freq_lo=99.9e6, freq_hi=100.1e6,
                                model="energy-detector", **extra)


class poster(gr.sync_block):
    """Passes floats through; posts its messages on "decisions" at its first call, then
    holds the stream until ``release`` is set (if ``hold``)."""

    def __init__(self, msgs, hold=False):
        gr.sync_block.__init__(self, "poster", in_sig=[np.float32], out_sig=[np.float32])
        self.message_port_register_out(pmt.intern("decisions"))
        self.msgs = list(msgs)
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def work(self, input_items, output_items):
        for msg in self.msgs:
            self.message_port_pub(pmt.intern("decisions"), msg)
        self.msgs = []
        self.release.wait(10)
        output_items[0][:] = input_items[0]
        return len(output_items[0])


def flowgraph(sink, msgs, hold=False):
    tb = gr.top_block()
    post = poster(msgs, hold)
    tb.connect(blocks.vector_source_f([0.0] * 100), post, blocks.null_sink(gr.sizeof_float))
    tb.msg_connect(post, "decisions", sink, "decisions")
    return tb, post


def read_lines(path):
    with open(path, encoding="utf-8") as fp:
        text = fp.read()
    assert text == "" or text.endswith("\n")  # whole lines only
    return [json.loads(line) for line in text.splitlines()]


def test_001_every_line_parses_and_validates(tmp_path):
    path = tmp_path / "d.jsonl"
    good = [decision(i) for i in range(50)] + [decision(50, snr_db=3.5, channel=2)]
    bad = [dict_to_pmt({"v": 1, "task": "occupancy"}),  # fields missing
           dict_to_pmt({**decision(0), "score": 1.5}),  # out of range
           pmt.from_double(1.0), pmt.intern("not json")]
    msgs = [dict_to_pmt(d) for d in good[:25]] + bad + [dict_to_pmt(d) for d in good[25:]]
    sink = decision_file_sink(str(path))
    tb, _ = flowgraph(sink, msgs)
    tb.run()
    lines = read_lines(path)
    for line in lines:
        schema.validate_decision(line)
    assert lines == good
    assert sink.stats() == {"written": 51, "malformed": 4, "not_written": 0,
                            "stopped_reason": "stopped"}


def test_002_each_line_reaches_the_file_at_once(tmp_path):
    """Lines are in the file while the flowgraph still runs: a crash would keep them."""
    path = tmp_path / "live.jsonl"
    sink = decision_file_sink(str(path))
    tb, post = flowgraph(sink, [dict_to_pmt(decision(i)) for i in range(3)], hold=True)
    tb.start()
    try:
        deadline = time.monotonic() + 5
        while len(read_lines(path)) < 3:
            assert time.monotonic() < deadline, "lines did not reach the file"
            time.sleep(0.01)
    finally:
        post.release.set()
        tb.wait()
    assert read_lines(path) == [decision(i) for i in range(3)]


def test_003_full_disk_stops_writing_and_stays_alive(tmp_path, caplog):
    path = tmp_path / "full.jsonl"
    line = len(schema.decision_to_json(decision(0))) + 1
    sink = decision_file_sink(str(path))
    sink._file = full_disk_file(sink._file, room=2 * line + line // 2)
    tb, _ = flowgraph(sink, [dict_to_pmt(decision(i)) for i in range(10)])
    with caplog.at_level(logging.INFO, logger="spectrumfm"):
        tb.run()  # returns: the sink neither raised nor hung
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{path}: No space left on device: decisions are no longer written, "
                      "stream continues"]
    assert read_lines(path) == [decision(0), decision(1)]  # the half line was cut off
    stats = sink.stats()
    assert stats["written"] == 2 and stats["not_written"] == 8
    assert stats["stopped_reason"] == "No space left on device"


def test_004_unwritable_path_is_an_input_error(tmp_path):
    missing = tmp_path / "nowhere" / "d.jsonl"
    with pytest.raises(InputError) as err:
        decision_file_sink(str(missing))
    assert str(err.value) == f"{missing}: No such file or directory"
    with pytest.raises(InputError, match="Is a directory"):
        decision_file_sink(str(tmp_path))
