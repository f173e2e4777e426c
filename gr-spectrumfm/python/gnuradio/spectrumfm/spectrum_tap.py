"""Spectrum tap block: averaged power spectrum rows in dB for the waterfall."""

import numpy as np
from gnuradio import gr

from spectrumfm import dsp


class spectrum_tap(gr.decim_block):
    """One averaged dB spectrum row per ``fft_size * n_avg`` input samples.

    Each row is the mean of ``n_avg`` consecutive, non-overlapping windowed FFTs
    (``dsp.power_spectrum_db``): DC in the middle, dB relative to a full-scale tone (a
    complex exponential of amplitude 1 on a bin centre reads 0 dB; white noise of variance
    s2 reads ``10 log10(s2) + dsp.noise_bin_gain_db(window, fft_size)``).

    Why not GNU Radio's ``logpwrfft``: it keeps one FFT frame in every n (a keep-one-in-n
    before the FFT, set by its frame rate) and drops the samples between, so a burst that
    falls between two kept frames never shows. Here every sample is in exactly one FFT and
    all of a row's FFTs are averaged, so a short burst shows at its duty-cycle-weighted power.

    Ports:
        in0: complex64 samples.
        out0: float32 vectors of ``fft_size`` (one dB row). Stream tags pass through at the
            decimated offset (decim_block default), so ``rx_freq``/``rx_rate``/``rx_time``
            stay with the row they arrived in.

    Args:
        fft_size: FFT length in samples (bins per row).
        n_avg: FFTs averaged per row; rows per second = samp_rate / (fft_size * n_avg).
        window: one of "hann", "hamming", "blackman", "blackmanharris", "flattop", "rect".
    """

    def __init__(self, fft_size=1024, n_avg=8, window="hann"):
        fft_size, n_avg = int(fft_size), int(n_avg)
        if fft_size < 1 or n_avg < 1:
            raise ValueError(f"fft_size and n_avg must be positive, got {fft_size}, {n_avg}")
        gr.decim_block.__init__(self, name="spectrumfm_spectrum_tap", in_sig=[np.complex64],
                                out_sig=[(np.float32, fft_size)], decim=fft_size * n_avg)
        self.fft_size, self.n_avg = fft_size, n_avg
        self.window = dsp.get_window(window, fft_size)     # raises on an unknown name

    def work(self, input_items, output_items):
        out = output_items[0]
        rows = len(out)
        x = input_items[0][:rows * self.n_avg * self.fft_size]
        # (rows, n_avg, fft_size): row r holds FFT frames r*n_avg .. r*n_avg + n_avg - 1.
        frames = x.reshape(rows, self.n_avg, self.fft_size)
        out[:] = dsp.power_spectrum_db(frames, self.window)
        return rows
