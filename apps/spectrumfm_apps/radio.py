"""Live radios for `spectrumfm run`: SoapySDR devices and rtl_tcp servers.

``open_radio(args)`` returns an object with the same face for both: ``label`` (names it in
messages), ``samp_rate`` and ``center_freq`` (what the radio took), ``connect(tb)`` (adds its
blocks, returns the one to connect downstream), ``samples_produced``, ``retune(freq)``,
``fault`` (why the stream ended early, else None) and ``stats()``.

Values a radio cannot take are clamped to what it reports, with a warning saying what was
used; a device string that matches nothing is an InputError listing the drivers there are;
a radio that cannot be reached is a RadioError.
"""

from __future__ import annotations

import logging
import math
import os

from spectrumfm import radio as limits
from spectrumfm.errors import InputError, RadioError

log = logging.getLogger("spectrumfm")


def open_radio(args):
    if args.source == "rtl_tcp":
        return RtlTcpRadio(args)
    return SoapyRadio(args)


def gain_arg(text):
    """``--gain``: None for automatic, else dB; InputError otherwise."""
    if text is None or str(text).lower() == "auto":
        return None
    try:
        gain = float(text)
    except ValueError:
        raise InputError(f"--gain {text}: expected a number of dB or 'auto'") from None
    if not math.isfinite(gain):
        raise InputError(f"--gain {text}: expected a number of dB or 'auto'")
    return gain


class RtlTcpRadio:
    """An RTL-SDR behind ``rtl_tcp``, through ``gnuradio.spectrumfm.rtltcp_source``."""

    def __init__(self, args):
        from gnuradio import spectrumfm

        try:
            host, port = limits.parse_host_port(args.args or "127.0.0.1:1234")
        except ValueError as exc:
            raise InputError(f"--args {exc}") from None
        for name in ("antenna", "bandwidth"):
            if getattr(args, name) is not None:
                log.warning("--%s: rtl_tcp has no such setting; ignored", name)
        self.block = spectrumfm.rtltcp_source(
            host, port, args.samp_rate, args.freq, gain_arg(args.gain),
            args.ppm, args.watchdog, args.reconnect, args.duration)
        self.label = self.block.where

    samp_rate = property(lambda self: self.block.samp_rate)
    center_freq = property(lambda self: self.block.center_freq)
    samples_produced = property(lambda self: self.block.samples_produced)
    fault = property(lambda self: self.block.fault)

    def connect(self, tb):
        return self.block

    def retune(self, freq):
        self.block.set_center_freq(freq)

    def stats(self):
        st = self.block.stats()
        return {k: st[k] for k in ("overflows", "samples_dropped", "reconnects", "connected")}


def quiet_soapy(verbose=False):
    """Keep SoapySDR's and UHD's informational lines off standard error."""
    os.environ.setdefault("UHD_LOG_CONSOLE_LEVEL", "debug" if verbose else "warning")
    import SoapySDR

    SoapySDR.setLogLevel(SoapySDR.SOAPY_SDR_DEBUG if verbose else SoapySDR.SOAPY_SDR_WARNING)
    return SoapySDR


def soapy_drivers(SoapySDR):
    """Driver names the loaded SoapySDR modules registered (call after an enumerate)."""
    return sorted({name for m in SoapySDR.listModules()
                   for name in dict(SoapySDR.getLoaderResult(m))})


def find_soapy(args_text, verbose=False):
    """The devices matching a device string; InputError naming it when there are none."""
    SoapySDR = quiet_soapy(verbose)
    found = SoapySDR.Device.enumerate(args_text)
    if found:
        return [dict(d) for d in found]
    drivers = soapy_drivers(SoapySDR)
    driver = dict(SoapySDR.KwargsFromString(args_text)).get("driver")
    listed = ", ".join(drivers) or "none (install a module, e.g. soapysdr-module-rtlsdr)"
    if driver and driver not in drivers:
        raise InputError(f"--args {args_text!r}: SoapySDR has no driver {driver!r}; "
                         f"drivers available: {listed}")
    raise InputError(f"--args {args_text!r}: no radio matches (SoapySDR drivers available: "
                     f"{listed}; `spectrumfm devices` lists the radios attached)")


class SoapyRadio:
    """Any SoapySDR device (RTL-SDR, USRP through UHD, ...), through ``gnuradio.soapy``,
    followed by ``stream_monitor`` (overflows, the watchdog, ``--duration``)."""

    def __init__(self, args):
        from gnuradio import soapy, spectrumfm

        self.label = args.args or "SoapySDR"
        find_soapy(args.args, getattr(args, "verbose", False))
        try:
            self.src = soapy.source(args.args, "fc32", 1, "", "", [""], [""])
        except (RuntimeError, ValueError) as exc:
            raise RadioError(f"{self.label}: {exc}") from None
        configure_soapy(self.src, args, self.label)
        self.samp_rate = self.src.get_sample_rate(0)
        self.center_freq = self.src.get_frequency(0)
        self.monitor = spectrumfm.stream_monitor(self.samp_rate, args.watchdog, args.duration)

    samples_produced = property(lambda self: self.monitor.samples_produced)
    fault = property(lambda self: self.monitor.fault and f"{self.label}: {self.monitor.fault}")

    def connect(self, tb):
        tb.connect(self.src, self.monitor)
        return self.monitor

    def retune(self, freq):
        self.src.set_frequency(0, freq)

    def stats(self):
        st = self.monitor.stats()
        return {"overflows": st["overflows"], "samples_dropped": st["samples_dropped"]}


def _clamped(value, ranges, what, unit, label):
    used = limits.clamp_to_ranges(value, ranges)
    if used != value:
        log.warning("%s: %s %g %s is outside what the radio takes (%s); using %g", label, what,
                    value, unit, limits.describe_ranges(ranges, unit), used)
    return used


def configure_soapy(src, args, label):
    """Apply the command line's settings to a ``gnuradio.soapy`` source, clamped to the
    ranges the device reports (a warning says what was used instead)."""
    def ranges(rs):
        return [(r.minimum(), r.maximum()) for r in rs]

    if args.samp_rate:
        src.set_sample_rate(0, _clamped(args.samp_rate, ranges(src.get_sample_rate_range(0)),
                                        "sample rate", "S/s", label))
    if args.freq:
        src.set_frequency(0, _clamped(args.freq, ranges(src.get_frequency_range(0)),
                                      "frequency", "Hz", label))
    gain = gain_arg(args.gain)
    if gain is None and src.has_gain_mode(0):
        src.set_gain_mode(0, True)
    elif gain is None:
        log.warning("%s: no automatic gain; keeping the radio's gain of %g dB", label,
                    src.get_gain(0))
    else:
        if src.has_gain_mode(0):
            src.set_gain_mode(0, False)
        src.set_gain(0, _clamped(gain, ranges([src.get_gain_range(0)]), "gain", "dB", label))
    if args.antenna is not None:
        antennas = list(src.list_antennas(0))
        if antennas and args.antenna not in antennas:
            raise InputError(f"--antenna {args.antenna}: {label} has antennas "
                             f"{', '.join(antennas)}")
        src.set_antenna(0, args.antenna)
    if args.bandwidth:
        src.set_bandwidth(0, _clamped(args.bandwidth, ranges(src.get_bandwidth_range(0)),
                                      "bandwidth", "Hz", label))
    if args.ppm:
        if src.has_frequency_correction(0):
            src.set_frequency_correction(0, float(args.ppm))
        else:
            log.warning("%s: no frequency correction; --ppm ignored", label)
