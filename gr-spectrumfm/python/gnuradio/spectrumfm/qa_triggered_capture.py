"""QA for triggered_capture: a burst found by the analysis chain is captured with its
pre-trigger samples, as valid SigMF."""

import json

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr
from sigmf import sigmffile

from gnuradio.spectrumfm import analysis_chain, triggered_capture
from gnuradio.spectrumfm.pmtutil import EOS, RX_FREQ
from spectrumfm.errors import InputError

RATE = 256e3
FREQ = 433.92e6
BURST = (0.6, 0.8)     # seconds


def scene(seconds=1.2, seed=2):
    rng = np.random.default_rng(seed)
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    x = 0.01 * (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
    on = (t >= BURST[0]) & (t < BURST[1])
    x[on] += 0.3 * np.exp(2j * np.pi * 30e3 * t[on])
    return x.astype(np.complex64)


def tag(offset, key, value):
    t = gr.tag_t()
    t.offset, t.key, t.value = offset, key, value
    return t


def run(tmp_path, expression, x=None, **kw):
    x = scene() if x is None else x
    tags = [tag(0, RX_FREQ, pmt.from_double(FREQ)), tag(len(x) - 1, EOS, pmt.PMT_T)]
    src = blocks.vector_source_c(x, False, 1, tags)
    chain = analysis_chain(RATE, 0.0, "occupancy,emission")
    cap = triggered_capture(str(tmp_path / "snips"), RATE, 0.0, expression, **kw)
    tb = gr.top_block()
    tb.connect(src, chain, cap)
    tb.msg_connect(chain, "decisions", cap, "decisions")
    tb.run()
    return cap, x


def test_001_a_burst_is_captured_with_pre_trigger_samples(tmp_path):
    cap, x = run(tmp_path, "emission>0.9,freq_lo>433.9e6", pre_s=0.25, post_s=0.1)
    assert cap.stats()["written"] == 1, cap.stats()
    sf = sigmffile.fromfile(cap.files[0])
    sf.validate()
    cap0 = sf.get_captures()[0]
    start = cap0["core:global_index"]
    assert cap0["core:frequency"] == FREQ
    # The snippet starts pre_s before the burst (the detector finds its start within a frame).
    assert abs(start / RATE - (BURST[0] - 0.25)) < 0.01
    data = sf.read_samples()
    np.testing.assert_array_equal(data, x[start:start + len(data)])
    assert abs(len(data) / RATE - (BURST[1] - BURST[0] + 0.35)) < 0.02
    ann = sf.get_annotations()
    assert [a["core:label"] for a in ann] == ["emission"]
    assert abs(ann[0]["core:sample_start"] - 0.25 * RATE) < 0.01 * RATE
    meta = json.loads(open(cap.files[0]).read())
    assert "triggered by emission>0.9" in meta["global"]["core:description"]


def test_002_overlapping_matches_extend_one_snippet(tmp_path):
    cap, _ = run(tmp_path, "task=occupancy,label=occupied,freq_lo>433.9e6", pre_s=0.1,
                 post_s=0.05)
    st = cap.stats()
    assert st["written"] == 1 and st["matched"] > 3      # one per slot during the burst
    assert len(sigmffile.fromfile(cap.files[0]).get_annotations()) == st["matched"]


def test_003_no_match_no_file(tmp_path):
    cap, _ = run(tmp_path, "label=LTE")
    assert cap.stats() == {"matched": 0, "written": 0, "skipped": 0}
    assert not list((tmp_path / "snips").iterdir())


def test_004_max_files(tmp_path):
    cap, _ = run(tmp_path, "task=occupancy", pre_s=0.0, post_s=0.0, max_s=0.01, max_files=2)
    st = cap.stats()
    assert st["written"] == 2 and st["skipped"] > 0


def test_005_a_bad_expression_names_itself(tmp_path):
    with pytest.raises(InputError, match="score>>1"):
        triggered_capture(str(tmp_path), RATE, 0.0, "score>>1")
