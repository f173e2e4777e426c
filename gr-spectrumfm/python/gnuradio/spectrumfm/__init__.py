"""gr-spectrumfm: GNU Radio blocks that watch the spectrum with foundation models.

``from gnuradio import spectrumfm``. The blocks are thin over the ML core (the top-level
``spectrumfm`` package, which imports no GNU Radio).
"""

from spectrumfm import __version__
