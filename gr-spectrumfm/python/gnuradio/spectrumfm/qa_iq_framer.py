"""QA for iq_framer: frame contents for stride == len, overlap and duty cycle."""

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio.spectrumfm.iq_framer import iq_framer

N = 50_000   # several work() calls, so history across calls is exercised


def run_framer(window_len, stride, tags=()):
    x = (np.arange(N) + 1j * -np.arange(N)).astype(np.complex64)
    tb = gr.top_block()
    src = blocks.vector_source_c(x, False, 1, list(tags))
    framer = iq_framer(window_len, stride)
    sink = blocks.vector_sink_c(window_len)
    tb.connect(src, framer, sink)
    tb.run()
    return x, np.array(sink.data(), np.complex64).reshape(-1, window_len), sink.tags()


def expected_frames(x, window_len, stride, n_frames):
    """Frame j: the window_len samples ending at (j + 1) * stride; zeros before sample 0."""
    padded = np.concatenate([np.zeros(window_len, np.complex64), x])
    ends = window_len + (np.arange(n_frames) + 1) * stride      # in padded coordinates
    return np.stack([padded[end - window_len:end] for end in ends])


def test_001_stride_equal_to_length_tiles_the_stream():
    x, frames, _ = run_framer(128, 128)
    assert frames.shape == (N // 128, 128)
    assert np.array_equal(frames, x[:frames.size].reshape(-1, 128))


def test_002_overlapping_windows_with_zero_history_at_start():
    x, frames, _ = run_framer(128, 32)
    assert frames.shape[0] == N // 32
    assert np.array_equal(frames, expected_frames(x, 128, 32, frames.shape[0]))
    assert np.all(frames[0, :96] == 0) and np.array_equal(frames[0, 96:], x[:32])
    assert np.array_equal(frames[10], x[11 * 32 - 128:11 * 32])


def test_003_duty_cycle_keeps_the_end_of_each_stride():
    x, frames, _ = run_framer(100, 1000)
    assert frames.shape[0] == N // 1000
    assert np.array_equal(frames, expected_frames(x, 100, 1000, frames.shape[0]))
    assert np.array_equal(frames[0], x[900:1000])


def test_004_tags_follow_the_decimation():
    tag = gr.python_to_tag((640, pmt.intern("rx_rate"), pmt.from_double(2.4e6), pmt.PMT_F))
    _, _, tags = run_framer(128, 64, tags=[tag])
    assert len(tags) == 1 and tags[0].offset == 10


def test_005_bad_arguments_raise():
    with pytest.raises(ValueError):
        iq_framer(0, 10)
    with pytest.raises(ValueError):
        iq_framer(10, 0)
