"""The analysis chain: one hier block shared by `spectrumfm run` and the GRC flowgraphs."""

from gnuradio import gr

from spectrumfm.schema import TASKS

from .energy_detector import energy_detector
from .pmtutil import PORT_DECISIONS, PORT_STATUS

# The classical chain (no neural model): its tasks.
ENERGY_DETECTOR = "energy-detector"
SUPPORTED_TASKS = ("occupancy", "emission")
# What a neural model's adapters can decide (spectrumfm.infer.bundle.ENGINE_TASKS).
MODEL_TASKS = ("occupancy", "anomaly", "technology", "modulation")


def parse_tasks(tasks, model=ENERGY_DETECTOR):
    """Split ``"occupancy,emission"`` into a tuple, raising ValueError naming a bad task.

    With a neural ``model`` the tasks are among ``MODEL_TASKS`` and an empty string means
    every task the model has an adapter for (returned as an empty tuple); whether the model
    has an adapter for each is checked when it loads (``load_bundle``).
    """
    names = tuple(t.strip() for t in str(tasks).split(",") if t.strip())
    classical = model == ENERGY_DETECTOR
    if not names and classical:
        raise ValueError("--tasks is empty")
    for name in names:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
        if classical and name not in SUPPORTED_TASKS:
            raise ValueError(f"task {name!r} needs a neural model (--model NAME|DIR); the "
                             f"energy detector does {', '.join(SUPPORTED_TASKS)}")
        if not classical and name not in MODEL_TASKS:
            raise ValueError(f"task {name!r} comes from the energy detector (--model "
                             f"{ENERGY_DETECTOR}); a model does {', '.join(MODEL_TASKS)}")
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
        tasks: comma-separated tasks: with the energy detector among ``SUPPORTED_TASKS``;
            with a model among ``MODEL_TASKS`` (empty: every task it has an adapter for).
        fft_size: FFT length of the detector's time-frequency grid, in samples.
        slot_s: the occupancy grid's time step, in seconds (rounded to whole FFT frames at
            ``samp_rate``). Emission boxes keep the finer resolution of a few FFT frames;
            the slot sets how often each channel gets an occupancy decision, so that a fast
            radio does not drown subscribers in decisions (16 channels at 20 slots/s = 320/s).
        n_channels: sub-bands of the occupancy grid; must divide ``fft_size``.
        pfa: false-alarm probability per grid cell.
        model: "energy-detector" (the classical chain), or a model name or folder run by the
            ``inference`` block (see there; fft_size is the energy detector's only).
        device: "auto", "cpu", "cuda" or "cuda:N" (models only).
        lossless: wait for the model instead of dropping windows (replays; models only).
        max_batch: windows per batch on the device (models only).
        max_latency_s: longest wait for a batch to fill, seconds (models only).
        max_queue_windows: the model's queue bound in windows (models only).
    """

    def __init__(self, samp_rate, center_freq=0.0, tasks="occupancy,emission", fft_size=256,
                 slot_s=0.05, n_channels=16, pfa=1e-3, model=ENERGY_DETECTOR, device="auto",
                 lossless=False, max_batch=256, max_latency_s=0.05, max_queue_windows=8192):
        gr.hier_block2.__init__(self, "spectrumfm_analysis_chain",
                                gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        model = str(model or ENERGY_DETECTOR)
        self.model = model
        self.tasks = parse_tasks(tasks, model)
        self.message_port_register_hier_out("decisions")
        self.message_port_register_hier_out("status")
        if model == ENERGY_DETECTOR:
            frames_per_slot = max(1, round(float(slot_s) * float(samp_rate) / int(fft_size)))
            self.detector = energy_detector(samp_rate, center_freq, fft_size, frames_per_slot,
                                            n_channels, pfa, ",".join(self.tasks))
        else:
            from .inference import inference

            self.detector = inference(samp_rate, center_freq, model, ",".join(self.tasks), device,
                                      lossless, n_channels, slot_s, pfa, max_batch,
                                      max_latency_s, max_queue_windows)
            self.tasks = self.detector.tasks
        self.connect(self, self.detector, self)
        self.msg_connect(self.detector, PORT_DECISIONS, self, PORT_DECISIONS)
        self.msg_connect(self.detector, PORT_STATUS, self, PORT_STATUS)

    def stats(self):
        """Counters for ``--stats``: samples_in, windows_analyzed, windows_dropped, latency."""
        return self.detector.stats()

    def abort(self):
        """Before ``tb.stop()``: a model stops waiting for its queue (see inference.abort)."""
        if hasattr(self.detector, "abort"):
            self.detector.abort()

    def set_pfa(self, pfa):
        if hasattr(self.detector, "set_pfa"):
            self.detector.set_pfa(pfa)
