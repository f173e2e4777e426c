"""QA for the inference block: a real flowgraph with a random-weight model on the CPU."""

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio.spectrumfm.inference import DECISION_TAG, inference
from gnuradio.spectrumfm.pmtutil import EOS, RX_FREQ, pmt_to_dict
from spectrumfm.schema import validate_decision

RATE = 1e6
FREQ = 915e6
TONE_HZ = 200e3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from engine_fixtures import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("models") / "spectrumfm-tiny")


def tone_in_noise(seconds, seed=0):
    """Noise of RMS 0.01 and a steady tone TONE_HZ above centre, 30 dB above it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = 0.01 * (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
    tone = 0.3 * np.exp(2j * np.pi * TONE_HZ / RATE * np.arange(n))
    return (noise + tone).astype(np.complex64)


def eos_tag(n):
    return gr.tag_utils.python_to_tag((n - 1, EOS, pmt.PMT_T, pmt.intern("qa")))


def run_graph(block, x, tags=()):
    """source -> block -> vector sink; decisions and status into message debug blocks."""
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist(), False, 1, list(tags))
    sink = blocks.vector_sink_c()
    decisions, status = blocks.message_debug(), blocks.message_debug()
    tb.connect(src, block, sink)
    tb.msg_connect(block, "decisions", decisions, "store")
    tb.msg_connect(block, "status", status, "store")
    tb.run()
    got = [pmt_to_dict(decisions.get_message(i)) for i in range(decisions.num_messages())]
    st = [pmt_to_dict(status.get_message(i)) for i in range(status.num_messages())]
    return got, st, sink


def test_001_lossless_decides_every_slot_in_schema(model_dir):
    x = tone_in_noise(0.3)
    block = inference(RATE, FREQ, str(model_dir), "occupancy,anomaly", "cpu", True,
                      n_channels=16, slot_s=0.05)
    got, status, sink = run_graph(block, x, [eos_tag(x.size)])
    st = block.stats()
    assert st["windows_dropped"] == 0 and st["samples_in"] == x.size
    assert st["windows_analyzed"] > 0 and st["latency_p95_s"] >= st["latency_p50_s"] >= 0
    for d in got:
        validate_decision(d)
        assert (d["center_freq"], d["samp_rate"]) == (FREQ, RATE)
        assert d["model"] == f"spectrumfm-tiny/{'sensing' if d['task'] == 'occupancy' else 'anomaly'}"
    assert {d["task"] for d in got} == {"occupancy", "anomaly"}
    for task in ("occupancy", "anomaly"):
        ds = [d for d in got if d["task"] == task]
        slots = sorted({d["sample_start"] for d in ds})
        count = ds[0]["sample_count"]
        # Every slot, one after the other, each with all 16 channels.
        assert slots == [i * count for i in range(len(slots))]
        assert len(slots) >= x.size // count and len(ds) == 16 * len(slots)
        edges = sorted({(d["freq_lo"], d["freq_hi"]) for d in ds})
        assert len(edges) == 16
        assert edges[0][0] == pytest.approx(FREQ - RATE / 2)
        assert edges[-1][1] == pytest.approx(FREQ + RATE / 2)
    assert status and {"windows_per_s", "windows_dropped", "queue_windows", "latency_p50_s",
                       "latency_p95_s", "device", "memory_bytes", "model",
                       "tasks"} <= status[0].keys()
    assert status[0]["device"] == "cpu"


def test_002_passes_samples_and_tags_decisions(model_dir):
    x = tone_in_noise(0.2, seed=1)
    block = inference(RATE, FREQ, str(model_dir), "occupancy", "cpu", True)
    got, _, sink = run_graph(block, x, [eos_tag(x.size)])
    np.testing.assert_array_equal(np.asarray(sink.data(), np.complex64), x)
    tags = [t for t in sink.tags() if pmt.eq(t.key, DECISION_TAG)]
    assert len(tags) == len(got) > 0
    tagged = [pmt_to_dict(t.value) for t in tags]
    for d, t in zip(tagged, tags):
        validate_decision(d)
        assert t.offset >= d["sample_start"]   # a decision follows its samples


def test_003_emission_tasks_name_model_and_adapter(model_dir):
    x = tone_in_noise(0.3, seed=2)
    block = inference(RATE, FREQ, str(model_dir), "technology,modulation", "cpu", True)
    got, _, _ = run_graph(block, x, [eos_tag(x.size)])
    assert {d["task"] for d in got} == {"technology", "modulation"}
    tone = FREQ + TONE_HZ
    for d in got:
        validate_decision(d)
        assert d["model"] == f"spectrumfm-tiny/{d['task']}"
        assert d["freq_lo"] - 20e3 <= tone <= d["freq_hi"] + 20e3


def test_004_stop_drains_without_eos(model_dir):
    # No EOS tag: stop() flushes the analysis and waits for the worker.
    x = tone_in_noise(0.25, seed=3)
    block = inference(RATE, FREQ, str(model_dir), "occupancy", "cpu", True, slot_s=0.05)
    run_graph(block, x)
    st = block.stats()
    assert st["windows_dropped"] == 0 and st["queue_windows"] == 0
    assert st["windows_analyzed"] >= 16 * (x.size // 51200)
    assert st["decisions"] == st["windows_analyzed"]   # one window per channel and slot


def test_005_drop_mode_counts_what_it_drops(model_dir):
    # A queue of one job's worth and a stream delivered as fast as the source goes: the
    # worker cannot keep up, and nothing is lost uncounted.
    x = tone_in_noise(2.0, seed=4)
    block = inference(RATE, FREQ, str(model_dir), "occupancy,anomaly", "cpu", False,
                      max_queue_windows=16)
    run_graph(block, x, [eos_tag(x.size)])
    st = block.stats()
    assert st["windows_dropped"] > 0 and st["jobs_dropped"] > 0
    assert st["windows_analyzed"] + st["windows_dropped"] == block._worker_stats()["windows_in"]


def test_006_rx_freq_retunes_decisions(model_dir):
    x = tone_in_noise(0.3, seed=5)
    half = x.size // 2
    retune = gr.tag_utils.python_to_tag((half, RX_FREQ, pmt.from_double(100e6), pmt.intern("qa")))
    block = inference(RATE, FREQ, str(model_dir), "occupancy", "cpu", True)
    got, _, _ = run_graph(block, x, [retune, eos_tag(x.size)])
    before = [d for d in got if d["sample_start"] + d["sample_count"] <= half]
    after = [d for d in got if d["sample_start"] >= half]
    assert before and after
    assert all(d["center_freq"] == FREQ for d in before)
    assert all(d["center_freq"] == 100e6 for d in after)
    assert not [d for d in got if d["sample_start"] < half < d["sample_start"] + d["sample_count"]]


def test_007_bad_model_is_one_clear_error(tmp_path):
    from spectrumfm.errors import InputError

    with pytest.raises(InputError, match="model.safetensors"):
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "config.json").write_text("{}")
        inference(RATE, FREQ, str(tmp_path / "broken"), "occupancy", "cpu")
