"""spectrumfm: the ML core of gr-spectrumfm.

Features, models, training, data generation, recording readers, the classical detector and
the wire schema. Nothing under this package imports GNU Radio or Qt, so training runs on a
machine that has only PyTorch (a test enforces this: ``tests/test_core_isolation.py``).
The GNU Radio blocks live in ``gnuradio.spectrumfm`` and are thin over this package.
"""

__version__ = "0.1.0"
