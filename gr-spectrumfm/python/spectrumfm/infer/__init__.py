"""The inference engine's ML core: model bundles, the batching worker, band analysis.

Imports neither GNU Radio nor Qt (the GNU Radio block in ``gnuradio.spectrumfm.inference``
is a thin shell over it)."""
