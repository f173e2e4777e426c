"""The ``noise`` class: no emitter at all.

Convention: the generator returns all-zero samples, none of them active, and the dataset
adds receiver noise to every example as it does to the others, so a ``noise`` example is
pure receiver noise at the floor every other class sits on. It has no signal power, so no
SNR (the dataset stores NaN), and nothing to scale: a power normalisation over the active
samples (:func:`~spectrumfm.synth.core.unit_power`) finds none and leaves the zeros as they
are. Its ``bandwidth`` is the whole capture.
"""

from __future__ import annotations

import numpy as np

from spectrumfm.synth.core import Signal, register


@register("technology", "noise", min_rate=0.0,
          description="no signal: the example is receiver noise only")
def noise(rng: np.random.Generator, samp_rate: float, n: int, *,
          burst: bool = False) -> Signal:
    """``n`` zero samples, none active.

    Args:
        rng: random generator (unused: nothing is random until the dataset's noise).
        samp_rate: output rate, S/s; any.
        n: number of samples.
        burst: ignored.

    Returns:
        ``Signal(iq=zeros, bandwidth=samp_rate, active=all False, params={})``.
    """
    return Signal(np.zeros(n, np.complex64), float(samp_rate), np.zeros(n, bool), {})
