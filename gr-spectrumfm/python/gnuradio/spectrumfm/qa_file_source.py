"""QA for file_source: real flowgraphs replaying files written here, checked sample by sample."""

import json
import time

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio.spectrumfm.file_source import file_source
from gnuradio.spectrumfm.pmtutil import EOS
from spectrumfm.errors import InputError


def run(src, head=None):
    """Run src -> (head) -> vector sink to completion; returns (samples, {key: [(offset, value)]})."""
    tb = gr.top_block()
    sink = blocks.vector_sink_c()
    if head is None:
        tb.connect(src, sink)
    else:
        limit = blocks.head(gr.sizeof_gr_complex, head)
        tb.connect(src, limit, sink)
    tb.run()
    tags = {}
    for t in sink.tags():
        tags.setdefault(pmt.symbol_to_string(t.key), []).append((t.offset, t.value))
    return np.array(sink.data(), dtype=np.complex64), tags


def iq(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)


def write_sigmf(base, data, datatype, rate, captures, **glob):
    data.tofile(f"{base}.sigmf-data")
    meta = {"global": {"core:datatype": datatype, "core:sample_rate": rate,
                       "core:version": "1.2.0", **glob},
            "captures": captures, "annotations": []}
    with open(f"{base}.sigmf-meta", "w") as f:
        json.dump(meta, f)
    return f"{base}.sigmf-meta"


def test_001_cf32_exact_values(tmp_path):
    x = iq(5000)
    x.tofile(tmp_path / "a.cf32")
    src = file_source(str(tmp_path / "a.cf32"), samp_rate=1e6, realtime=False)
    out, tags = run(src)
    np.testing.assert_array_equal(out, x)
    assert src.samples_produced == len(x) and src.num_samples == len(x)
    assert src.samp_rate == 1e6 and src.center_freq == 0.0
    assert tags["rx_rate"] == [(0, tags["rx_rate"][0][1])]
    assert pmt.to_double(tags["rx_rate"][0][1]) == 1e6
    assert "rx_freq" not in tags          # centre unknown: no rx_freq tag


def test_002_cu8_exact_values_and_given_freq(tmp_path):
    raw = (np.arange(512) % 256).astype(np.uint8)
    raw.tofile(tmp_path / "rtl.cu8")
    src = file_source(str(tmp_path / "rtl.cu8"), samp_rate=2.4e6, center_freq=100e6,
                      realtime=False)
    out, tags = run(src)
    f = (raw.astype(np.float64) - 127.5) / 128
    np.testing.assert_array_equal(out, (f[0::2] + 1j * f[1::2]).astype(np.complex64))
    assert [(o, pmt.to_double(v)) for o, v in tags["rx_freq"]] == [(0, 100e6)]
    assert src.center_freq == 100e6


def test_003_sigmf_ci16_be_values_and_tags(tmp_path):
    raw = np.array([0, 1, -1, 32767, -32768, 1234, 7, -7], dtype=">i2")
    meta = write_sigmf(tmp_path / "rec", raw, "ci16_be", 250e3,
                       [{"core:sample_start": 0, "core:frequency": 915e6,
                         "core:datetime": "2021-06-01T10:00:00.25Z"}])
    src = file_source(meta, realtime=False)
    out, tags = run(src)
    f = raw.astype(np.float64) / 32768
    np.testing.assert_array_equal(out, (f[0::2] + 1j * f[1::2]).astype(np.complex64))
    assert [(o, pmt.to_double(v)) for o, v in tags["rx_rate"]] == [(0, 250e3)]
    assert [(o, pmt.to_double(v)) for o, v in tags["rx_freq"]] == [(0, 915e6)]
    (offset, value), = tags["rx_time"]
    assert offset == 0
    assert pmt.to_uint64(pmt.tuple_ref(value, 0)) == 1622541600
    assert pmt.to_double(pmt.tuple_ref(value, 1)) == 0.25


def test_004_eos_on_last_sample(tmp_path):
    iq(3000).tofile(tmp_path / "a.cfile")
    out, tags = run(file_source(str(tmp_path / "a.cfile"), samp_rate=1e5, realtime=False))
    assert len(out) == 3000
    assert [o for o, _ in tags[pmt.symbol_to_string(EOS)]] == [2999]
    assert pmt.equal(tags[pmt.symbol_to_string(EOS)][0][1], pmt.PMT_T)


def test_005_duration_cuts(tmp_path):
    x = iq(4000)
    x.tofile(tmp_path / "a.cf32")
    src = file_source(str(tmp_path / "a.cf32"), samp_rate=1000.0, realtime=False,
                      duration=1.5)
    out, tags = run(src)
    np.testing.assert_array_equal(out, x[:1500])
    assert [o for o, _ in tags[pmt.symbol_to_string(EOS)]] == [1499]


def test_006_repeat_loops_the_file(tmp_path):
    x = iq(700)
    x.tofile(tmp_path / "a.cf32")
    src = file_source(str(tmp_path / "a.cf32"), samp_rate=1e6, realtime=False, repeat=True)
    out, tags = run(src, head=5000)          # endless: head ends the flowgraph
    np.testing.assert_array_equal(out, np.resize(x, 5000))
    assert pmt.symbol_to_string(EOS) not in tags
    assert [o for o, _ in tags["rx_rate"]] == [0]


def test_007_repeat_with_duration_ends_with_eos(tmp_path):
    x = iq(700)
    x.tofile(tmp_path / "a.cf32")
    src = file_source(str(tmp_path / "a.cf32"), samp_rate=1000.0, realtime=False,
                      repeat=True, duration=2.0)
    out, tags = run(src)
    np.testing.assert_array_equal(out, np.resize(x, 2000))
    assert [o for o, _ in tags[pmt.symbol_to_string(EOS)]] == [1999]


def test_008_realtime_does_not_run_ahead(tmp_path):
    iq(20000).tofile(tmp_path / "a.cf32")
    src = file_source(str(tmp_path / "a.cf32"), samp_rate=100e3, realtime=True)
    t0 = time.monotonic()
    out, _ = run(src)
    elapsed = time.monotonic() - t0
    assert len(out) == 20000
    assert elapsed >= 0.15                 # 0.2 s of signal; only a lower bound is meaningful


def test_009_sigmf_captures_retag_frequency(tmp_path):
    raw = iq(1000)
    meta = write_sigmf(tmp_path / "sweep", raw, "cf32_le", 1e6, [
        {"core:sample_start": 0, "core:frequency": 100e6},
        {"core:sample_start": 300, "core:frequency": 100e6,
         "core:datetime": "2021-06-01T10:00:01Z"},
        {"core:sample_start": 600, "core:frequency": 120e6}])
    out, tags = run(file_source(meta, realtime=False))
    np.testing.assert_array_equal(out, raw)
    assert [(o, pmt.to_double(v)) for o, v in tags["rx_freq"]] == [(0, 100e6), (600, 120e6)]
    assert [o for o, _ in tags["rx_time"]] == [300]


def test_010_repeat_retags_frequency_at_each_loop(tmp_path):
    meta = write_sigmf(tmp_path / "sweep", iq(400), "cf32_le", 1e6, [
        {"core:sample_start": 0, "core:frequency": 100e6},
        {"core:sample_start": 200, "core:frequency": 120e6}])
    _, tags = run(file_source(meta, realtime=False, repeat=True, duration=1000 / 1e6))
    assert [(o, pmt.to_double(v)) for o, v in tags["rx_freq"]] == [
        (0, 100e6), (200, 120e6), (400, 100e6), (600, 120e6), (800, 100e6)]
    assert [o for o, _ in tags["rx_rate"]] == [0]


def test_011_bad_input_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        file_source(str(tmp_path / "missing.cf32"), samp_rate=1e6)
    iq(10).tofile(tmp_path / "a.cf32")
    with pytest.raises(InputError, match="give --samp-rate"):
        file_source(str(tmp_path / "a.cf32"))
    with pytest.raises(InputError, match="duration"):
        file_source(str(tmp_path / "a.cf32"), samp_rate=1e6, duration=-1)


def test_012_override_from_block_args(tmp_path):
    meta = write_sigmf(tmp_path / "rec", iq(100), "cf32_le", 1e6,
                       [{"core:sample_start": 0, "core:frequency": 433.92e6}])
    src = file_source(meta, samp_rate=2e6, center_freq=434e6, realtime=False)
    assert (src.samp_rate, src.center_freq) == (2e6, 434e6)
    _, tags = run(src)
    assert pmt.to_double(tags["rx_rate"][0][1]) == 2e6
    assert pmt.to_double(tags["rx_freq"][0][1]) == 434e6
