"""gr-spectrumfm: GNU Radio blocks that watch the spectrum with foundation models.

``from gnuradio import spectrumfm``. The blocks are thin over the ML core (the top-level
``spectrumfm`` package, which imports no GNU Radio).
"""

from spectrumfm import __version__

from .file_source import file_source
from .iq_framer import iq_framer
from .spectrum_tap import spectrum_tap
from .energy_detector import energy_detector
from .inference import inference
from .analysis_chain import analysis_chain
from .zmq_publisher import zmq_publisher
from .decision_file_sink import decision_file_sink
from .sigmf_recorder import sigmf_recorder
from .rtltcp_source import rtltcp_source
from .stream_monitor import stream_monitor
from .triggered_capture import triggered_capture
