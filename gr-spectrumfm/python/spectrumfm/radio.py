"""Radio settings without GNU Radio: clamping a value to what a device takes, RTL-SDR limits,
the rtl_tcp wire protocol, and scan plans.

The RTL-SDR facts are librtlsdr's (``rtlsdr_set_sample_rate`` accepts 225001-300000 and
900001-3200000 S/s; each tuner has its own frequency range and gain steps, in tenths of a dB).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

# --- clamping ---------------------------------------------------------------------------


def clamp_to_ranges(value: float, ranges) -> float:
    """The value itself when inside one of ``ranges`` [(lo, hi), ...], else the nearest edge."""
    ranges = [(float(lo), float(hi)) for lo, hi in ranges]
    if not ranges or any(lo <= value <= hi for lo, hi in ranges):
        return float(value)
    edges = [e for r in ranges for e in r]
    return min(edges, key=lambda e: abs(e - value))


def nearest_step(value: float, steps) -> float:
    """The step closest to ``value`` (a gain table); the value itself when there are none."""
    steps = list(steps)
    return float(min(steps, key=lambda s: abs(s - value))) if steps else float(value)


def describe_ranges(ranges, unit: str) -> str:
    """``"225001-300000 or 900001-3.2e+06 S/s"`` for a message."""
    parts = [f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}" for lo, hi in ranges]
    return " or ".join(parts) + f" {unit}"


# --- RTL-SDR ----------------------------------------------------------------------------

RTLSDR_RATES = ((225_001.0, 300_000.0), (900_001.0, 3_200_000.0))


@dataclass(frozen=True)
class Tuner:
    name: str
    freq_ranges: tuple          # ((lo, hi), ...) Hz
    gains_tenth_db: tuple       # gain steps the tuner takes, tenths of a dB

    @property
    def gains_db(self):
        return tuple(g / 10.0 for g in self.gains_tenth_db)


_R820T_GAINS = (0, 9, 14, 27, 37, 77, 87, 125, 144, 157, 166, 197, 207, 229, 254, 280, 297,
                328, 338, 364, 372, 386, 402, 421, 434, 439, 445, 480, 496)
# rtl_tcp's header carries librtlsdr's enum rtlsdr_tuner.
TUNERS = {
    0: Tuner("unknown", (), ()),
    1: Tuner("E4000", ((52e6, 1100e6), (1250e6, 2200e6)),
             (-10, 15, 40, 65, 90, 115, 140, 165, 190, 215, 240, 290, 340, 420)),
    2: Tuner("FC0012", ((22e6, 948.6e6),), (-99, -40, 71, 179, 192)),
    3: Tuner("FC0013", ((22e6, 1100e6),),
             (-99, -73, -65, -63, -60, -58, -54, 58, 61, 63, 65, 67, 68, 70, 71, 179, 181,
              182, 184, 186, 188, 191, 197)),
    4: Tuner("FC2580", ((146e6, 308e6), (438e6, 924e6)), ()),
    5: Tuner("R820T", ((24e6, 1766e6),), _R820T_GAINS),
    6: Tuner("R828D", ((24e6, 1766e6),), _R820T_GAINS),
}

# --- rtl_tcp protocol ---------------------------------------------------------------------

HEADER_LEN = 12          # b"RTL0", tuner type (u32 BE), number of gain steps (u32 BE)
CMD_FREQ, CMD_RATE, CMD_GAIN_MODE, CMD_GAIN, CMD_PPM = 0x01, 0x02, 0x03, 0x04, 0x05
CMD_AGC = 0x08
DEFAULT_PORT = 1234


def parse_header(data: bytes):
    """``(tuner type, gain count)`` from the 12-byte greeting; ValueError if it is not one."""
    if len(data) != HEADER_LEN or data[:4] != b"RTL0":
        raise ValueError(f"not an rtl_tcp server (greeting {bytes(data[:12])!r}, "
                         f"expected b'RTL0' and 8 bytes)")
    return struct.unpack(">II", data[4:])


def command(cmd: int, value: int) -> bytes:
    """One 5-byte command: command byte, parameter as u32 big-endian (negative: two's
    complement, as rtl_tcp reads the ppm correction as a signed int)."""
    return struct.pack(">BI", cmd, int(value) & 0xFFFFFFFF)


def parse_host_port(text: str, default_port: int = DEFAULT_PORT):
    """``"HOST:PORT"`` (or ``"HOST"``, ``"[::1]:PORT"``) -> (host, port); ValueError if not."""
    text = str(text).strip()
    if text.startswith("rtl_tcp="):           # gr-osmosdr's spelling
        text = text[len("rtl_tcp="):]
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 192.168.1.20:1234")
    return host, int(port)


# --- scanning -----------------------------------------------------------------------------

# Share of the sample rate a scan step uses: the edges of an RTL-SDR's (and most radios')
# passband roll off, so steps overlap by 20 % rather than butt against each other.
USABLE_FRACTION = 0.8


def scan_centers(start: float, stop: float, samp_rate: float,
                 usable: float = USABLE_FRACTION) -> list[float]:
    """Centre frequencies that cover [start, stop] Hz in steps of ``usable * samp_rate``."""
    if not (math.isfinite(start) and math.isfinite(stop) and stop > start):
        raise ValueError(f"scan range {start:g}:{stop:g} Hz: STOP must be above START")
    step = usable * samp_rate
    n = max(1, math.ceil((stop - start) / step))
    first = (start + stop) / 2 - (n - 1) * step / 2     # centred on the range
    return [first + i * step for i in range(n)]


def parse_scan(text: str):
    """``"START:STOP"`` in Hz (``88e6:108e6``, ``88M:108M``) -> (start, stop)."""
    lo, sep, hi = str(text).partition(":")
    if not sep:
        raise ValueError(f"--scan {text}: expected START:STOP in Hz, e.g. 88e6:108e6")
    try:
        start, stop = parse_freq(lo), parse_freq(hi)
    except ValueError:
        raise ValueError(f"--scan {text}: expected START:STOP in Hz, e.g. 88e6:108e6") from None
    if not stop > start:
        raise ValueError(f"--scan {text}: STOP must be above START")
    return start, stop


_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_freq(text: str) -> float:
    """``"100e6"``, ``"100M"``, ``"2.4G"`` -> Hz; ValueError if not a positive finite number."""
    text = str(text).strip()
    scale = _SUFFIX.get(text[-1:], 1.0)
    value = float(text[:-1] if scale != 1.0 else text) * scale
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{text}: not a positive frequency")
    return value
