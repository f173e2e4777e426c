"""IQ framer block: fixed-length windows of raw IQ for the inference engine."""

import numpy as np
from gnuradio import gr
from numpy.lib.stride_tricks import sliding_window_view


class iq_framer(gr.decim_block):
    """Cuts the stream into windows of ``window_len`` samples, one every ``stride`` samples.

    Output item j is the window of ``window_len`` samples that *ends* at absolute sample
    ``(j + 1) * stride`` (exclusive), i.e. covers samples
    ``[(j + 1) * stride - window_len, (j + 1) * stride)``:

    * ``stride == window_len``: consecutive windows, ``[j * stride, (j + 1) * stride)``.
    * ``stride < window_len``: windows overlap by ``window_len - stride`` samples (the block
      keeps that much history). The first windows reach before the stream start; those
      samples (negative indices) are zeros, GNU Radio's history padding: window 0 is
      ``window_len - stride`` zeros followed by samples ``[0, stride)``.
    * ``stride > window_len``: a duty cycle; of each ``stride`` samples only the last
      ``window_len`` are kept, ``stride - window_len`` samples before each window are skipped.

    Ports:
        in0: complex64 samples.
        out0: complex64 vectors of ``window_len``, at ``1 / stride`` of the input rate. Tags
            pass through at the decimated offset (decim_block default).

    Args:
        window_len: samples per window.
        stride: samples between the starts of consecutive windows (the decimation).
    """

    def __init__(self, window_len=128, stride=128):
        window_len, stride = int(window_len), int(stride)
        if window_len < 1 or stride < 1:
            raise ValueError(f"window_len and stride must be positive, got {window_len}, {stride}")
        gr.decim_block.__init__(self, name="spectrumfm_iq_framer", in_sig=[np.complex64],
                                out_sig=[(np.complex64, window_len)], decim=stride)
        self.window_len, self.stride = window_len, stride
        overlap = max(0, window_len - stride)
        if overlap:
            self.set_history(overlap + 1)
        # Offset of window 0 in the input buffer: the buffer starts ``overlap`` samples
        # (history) before the first new sample, and a window ends at the end of its stride.
        self._lead = overlap + stride - window_len

    def work(self, input_items, output_items):
        out = output_items[0]
        n = len(out)
        # (n, window_len) view, row k = buffer[lead + k*stride : lead + k*stride + window_len]
        windows = sliding_window_view(input_items[0][self._lead:], self.window_len)[::self.stride]
        out[:] = windows[:n]
        return n
