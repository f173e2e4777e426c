"""QA for analysis_chain: the hier block passes samples through and emits decisions."""

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio.spectrumfm.analysis_chain import analysis_chain, parse_tasks
from gnuradio.spectrumfm.pmtutil import EOS, RX_FREQ, pmt_to_dict
from spectrumfm.schema import validate_decision

RATE = 256e3


def scene(n=int(RATE * 0.5), seed=0):
    rng = np.random.default_rng(seed)
    x = 0.01 * (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
    x += 0.3 * np.exp(2j * np.pi * 40e3 / RATE * np.arange(n))
    return x.astype(np.complex64)


def run_chain(x, tags=(), tasks="occupancy,emission"):
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist(), False, 1, list(tags))
    chain = analysis_chain(RATE, 0.0, tasks)
    sink = blocks.vector_sink_c()
    store = blocks.message_debug()
    tb.connect(src, chain, sink)
    tb.msg_connect(chain, "decisions", store, "store")
    tb.run()
    decisions = [pmt_to_dict(store.get_message(i)) for i in range(store.num_messages())]
    return np.array(sink.data(), np.complex64), decisions


def tag(offset, key, value):
    t = gr.tag_t()
    t.offset, t.key, t.value = offset, key, value
    return t


def test_001_passthrough_is_exact():
    x = scene()
    y, _ = run_chain(x)
    np.testing.assert_array_equal(y, x)


def test_002_decisions_follow_schema_and_tags():
    x = scene()
    _, decisions = run_chain(x, [tag(0, RX_FREQ, pmt.from_double(2.4e9)),
                                 tag(x.size - 1, EOS, pmt.PMT_T)])
    assert decisions
    for d in decisions:
        validate_decision(d)
        assert d["center_freq"] == 2.4e9
    tone = 2.4e9 + 40e3
    occupancy = [d for d in decisions if d["task"] == "occupancy"]
    on_tone = [d for d in occupancy if d["freq_lo"] <= tone < d["freq_hi"]]
    elsewhere = [d for d in occupancy if not d["freq_lo"] <= tone < d["freq_hi"]]
    assert on_tone and all(d["label"] == "occupied" for d in on_tone)
    # pfa is 1e-3 per cell: a false alarm among the ~150 noise cells may happen, many may not.
    assert sum(d["label"] == "occupied" for d in elsewhere) <= 0.02 * len(elsewhere) + 1
    assert any(d["task"] == "emission" and d["freq_lo"] <= tone <= d["freq_hi"] for d in decisions)


def test_003_tasks_select_outputs():
    _, decisions = run_chain(scene(), tasks="occupancy")
    assert {d["task"] for d in decisions} == {"occupancy"}


def test_004_parse_tasks_refuses_unknown_and_model_tasks():
    assert parse_tasks("occupancy, emission") == ("occupancy", "emission")
    with pytest.raises(ValueError, match="unknown task"):
        parse_tasks("occupancy,bogus")
    with pytest.raises(ValueError, match="neural model"):
        parse_tasks("technology")
