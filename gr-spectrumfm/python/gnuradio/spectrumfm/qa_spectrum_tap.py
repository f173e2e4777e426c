"""QA for spectrum_tap: tone bin and level, noise level, short bursts, tags."""

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio.spectrumfm.spectrum_tap import spectrum_tap
from spectrumfm import dsp


def run_tap(x, fft_size, n_avg, window="hann", tags=()):
    tb = gr.top_block()
    src = blocks.vector_source_c(x, False, 1, list(tags))
    tap = spectrum_tap(fft_size, n_avg, window)
    sink = blocks.vector_sink_f(fft_size)
    tb.connect(src, tap, sink)
    tb.run()
    return np.array(sink.data(), np.float32).reshape(-1, fft_size), sink.tags()


@pytest.mark.parametrize("window", dsp.WINDOWS)
def test_001_tone_lands_in_its_bin_at_0db(window):
    fft_size, n_avg, rows = 512, 4, 6
    t = np.arange(fft_size * n_avg * rows)
    x = np.exp(2j * np.pi * (-37) / fft_size * t).astype(np.complex64)
    out, _ = run_tap(x, fft_size, n_avg, window)
    assert out.shape == (rows, fft_size)
    assert np.all(np.argmax(out, axis=1) == fft_size // 2 - 37)
    assert np.allclose(out[:, fft_size // 2 - 37], 0.0, atol=0.01)


def test_002_noise_reads_its_variance_plus_the_bin_gain():
    fft_size, n_avg, rows, var = 1024, 64, 4, 0.1
    rng = np.random.default_rng(0)
    n = fft_size * n_avg * rows
    x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * np.sqrt(var / 2))
    x = x.astype(np.complex64)
    out, _ = run_tap(x, fft_size, n_avg)
    expected = 10 * np.log10(var) + dsp.noise_bin_gain_db("hann", fft_size)
    assert abs(np.mean(out) - expected) < 0.2        # mean of dB of a 64-FFT average: -0.03 dB
    assert np.std(out) < 1.0                          # 64 averages: ~0.55 dB per bin


def test_003_a_one_frame_burst_shows_at_its_duty_cycle():
    fft_size, n_avg = 256, 8
    x = np.zeros(fft_size * n_avg * 3, np.complex64)
    t = np.arange(fft_size)
    # One FFT frame of tone in the middle of row 1 (logpwrfft would keep 1 frame in n).
    x[fft_size * (n_avg + 5):fft_size * (n_avg + 6)] = np.exp(2j * np.pi * 10 / fft_size * t)
    out, _ = run_tap(x, fft_size, n_avg)
    assert out[1, fft_size // 2 + 10] == pytest.approx(10 * np.log10(1 / n_avg), abs=0.01)
    assert out[0].max() < -150 and out[2].max() < -150


def test_004_tags_pass_through_decimated():
    fft_size, n_avg = 128, 4
    x = np.zeros(fft_size * n_avg * 10, np.complex64)
    tag = gr.python_to_tag((fft_size * n_avg * 6, pmt.intern("rx_freq"), pmt.from_double(1e8),
                            pmt.PMT_F))
    _, tags = run_tap(x, fft_size, n_avg, tags=[tag])
    assert len(tags) == 1 and tags[0].offset == 6
    assert pmt.to_double(tags[0].value) == 1e8


def test_005_bad_arguments_raise():
    with pytest.raises(ValueError):
        spectrum_tap(256, 4, "kaiser")
    with pytest.raises(ValueError):
        spectrum_tap(0, 4)
