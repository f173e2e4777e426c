"""PMT keys and conversions shared by the blocks (module constants, one place)."""

import json

import pmt

# Stream tags, as GNU Radio's own sources (UHD, SoapySDR, gr-osmosdr) name them.
RX_RATE = pmt.intern("rx_rate")    # pmt double, Hz
RX_FREQ = pmt.intern("rx_freq")    # pmt double, Hz
RX_TIME = pmt.intern("rx_time")    # pmt tuple (uint64 whole seconds, double fractional), UTC
# Our own: on the last sample of a finite stream, so blocks that keep state (open emission
# boxes, partial slots) can flush before the flowgraph ends.
EOS = pmt.intern("spectrumfm_eos")
# Our own: samples were lost just before this one (an overflow, a dropped network
# connection). Value: pmt uint64, samples lost (0 when unknown). What comes after is not
# continuous with what came before.
GAP = pmt.intern("spectrumfm_gap")

# Message ports.
PORT_DECISIONS = pmt.intern("decisions")
PORT_STATUS = pmt.intern("status")


def to_float(value):
    """A PMT number as float, or None (tags from other sources are checked, not trusted)."""
    if pmt.is_uint64(value):
        return float(pmt.to_uint64(value))
    if pmt.is_integer(value) or pmt.is_real(value):
        return float(pmt.to_double(value))
    return None


def dict_to_pmt(obj: dict):
    """A decision or status dict as a PMT dict (readable in GRC's Message Debug)."""
    return pmt.to_pmt(obj)


def pmt_to_dict(msg):
    """Back to a Python dict; accepts a PMT dict, or a symbol/blob holding JSON text.

    Returns None for anything else, so message handlers can count and skip bad input
    instead of raising through the scheduler.
    """
    try:
        if pmt.is_dict(msg):
            out = pmt.to_python(msg)
            return out if isinstance(out, dict) else None
        if pmt.is_symbol(msg):
            out = json.loads(pmt.symbol_to_string(msg))
            return out if isinstance(out, dict) else None
        if pmt.is_u8vector(msg) or pmt.is_blob(msg):
            out = json.loads(bytes(pmt.to_python(msg)).decode("utf-8"))
            return out if isinstance(out, dict) else None
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    return None
