"""The analysis chain: one hier block shared by `spectrumfm run` and the GRC flowgraphs."""

from gnuradio import gr

from spectrumfm.schema import TASKS

from .energy_detector import energy_detector
from .pmtutil import PORT_DECISIONS, PORT_STATUS

# Tasks the chain can serve today. Technology and modulation need a neural model; the
# inference engine adds them (and a learned anomaly score) when it lands.
SUPPORTED_TASKS = ("occupancy", "emission")


def parse_tasks(tasks):
    """Split ``"occupancy,emission"`` into a tuple, raising ValueError naming a bad task."""
    names = tuple(t.strip() for t in str(tasks).split(",") if t.strip())
    if not names:
        raise ValueError("--tasks is empty")
    for name in names:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
        if name not in SUPPORTED_TASKS:
            raise ValueError(f"task {name!r} needs a neural model, and none is available in this "
                             f"version; available tasks: {', '.join(SUPPORTED_TASKS)}")
    return names


class analysis_chain(gr.hier_block2):
    """Turns a complex baseband stream into decisions.

    Ports:
        in0: complex64 samples at ``samp_rate``; ``rx_rate``/``rx_freq``/``rx_time`` tags
            retune the decisions, the ``spectrumfm_eos`` tag flushes open emissions.
        out0: the same samples, passed through after analysis. Connect a SigMF recorder here
            (not beside the chain) so that it ends only after every decision reached it.
        decisions (message out): schema-v1 decisions as PMT dicts.
        status (message out): the chain's counters, at most once a second.

    Args:
        samp_rate: sample rate in Hz (until an ``rx_rate`` tag says otherwise).
        center_freq: centre frequency in Hz (until an ``rx_freq`` tag says otherwise).
        tasks: comma-separated tasks (see ``SUPPORTED_TASKS``).
        fft_size: FFT length of the detector's time-frequency grid, in samples.
        slot_s: the occupancy grid's time step, in seconds (rounded to whole FFT frames at
            ``samp_rate``). Emission boxes keep the finer resolution of a few FFT frames;
            the slot sets how often each channel gets an occupancy decision, so that a fast
            radio does not drown subscribers in decisions (16 channels at 20 slots/s = 320/s).
        n_channels: sub-bands of the occupancy grid; must divide ``fft_size``.
        pfa: false-alarm probability per grid cell.
    """

    def __init__(self, samp_rate, center_freq=0.0, tasks="occupancy,emission", fft_size=256,
                 slot_s=0.05, n_channels=16, pfa=1e-3):
        gr.hier_block2.__init__(self, "spectrumfm_analysis_chain",
                                gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.tasks = parse_tasks(tasks)
        self.message_port_register_hier_out("decisions")
        self.message_port_register_hier_out("status")
        frames_per_slot = max(1, round(float(slot_s) * float(samp_rate) / int(fft_size)))
        self.detector = energy_detector(samp_rate, center_freq, fft_size, frames_per_slot,
                                        n_channels, pfa, ",".join(self.tasks))
        self.connect(self, self.detector, self)
        self.msg_connect(self.detector, PORT_DECISIONS, self, PORT_DECISIONS)
        self.msg_connect(self.detector, PORT_STATUS, self, PORT_STATUS)

    def stats(self):
        """Counters for ``--stats``: samples_in, windows_analyzed, windows_dropped, latency."""
        return self.detector.stats()

    def set_pfa(self, pfa):
        self.detector.set_pfa(pfa)
