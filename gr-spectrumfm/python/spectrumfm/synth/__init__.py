"""The synthetic RF data generator: labelled waveforms, impairments, anomalies and scenes.

No public dataset can be downloaded where this project is built, so it makes its own:

* :mod:`~spectrumfm.synth.modulations`: the RadioML 2018 modulation set, pulse-shaped;
* :mod:`~spectrumfm.synth.technologies`: WiFi, LTE, 5G NR, BLE, Zigbee, DVB-T, broadcast FM,
  LoRa, ADS-B, GSM and noise, each with its standard's structure;
* :mod:`~spectrumfm.synth.impairments`: AWGN at an in-band SNR and the channel and receiver
  impairments, each with an "off" setting;
* :mod:`~spectrumfm.synth.anomalies`: the paper's aliased-interferer case and jammers;
* :mod:`~spectrumfm.synth.scenes`: wideband captures with several emitters, as SigMF;
* :mod:`~spectrumfm.synth.dataset`: ``spectrumfm generate``'s HDF5 shards.

All of it is numpy/scipy: no GNU Radio, no Qt, no torch (see ``docs/generator.md`` for why
the waveforms are written here rather than run through gr-digital/gr-dtv flowgraphs).
"""

__all__ = ["FAMILIES", "Signal", "WaveformSpec", "get", "names"]


def __getattr__(name):
    # Lazy: the command line imports spectrumfm.synth.recipe at start-up to build its
    # parser, and the generators' scipy imports would add 0.3 s to every command.
    if name in __all__:
        from spectrumfm.synth import core
        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
