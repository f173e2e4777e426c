"""Recorded IQ files as one interface: SigMF, SigMF archives, raw interleaved IQ and WAV.

    rec = open_recording("capture.sigmf-meta")
    x = rec.read(0, 4096)          # complex64, scaled to [-1, 1)

Samples are memory-mapped, never loaded whole, so a recording of many gigabytes opens at
once and reading a window costs only that window. Integer samples are scaled to floats in
[-1, 1) (unsigned ones about their mid-point, as rtl_sdr's cu8 is: (x - 127.5) / 128); real
datatypes come back with a zero imaginary part. Anything wrong with the input raises
:class:`~spectrumfm.errors.InputError` whose one-line message names the file and the problem.
Standard library, numpy and sigmf only (no GNU Radio, no Qt).
"""

from __future__ import annotations

import calendar
import logging
import math
import os
import re
import tarfile

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.recording_formats import (
    RAW_FORMATS, Capture, Layout, locate_raw, locate_sigmf, locate_sigmf_archive, locate_wav,
)

__all__ = ["Capture", "Recording", "open_recording", "iso_to_unix", "FORMATS"]

log = logging.getLogger("spectrumfm")

#: Names accepted by ``format=`` (``--format``): the containers, then the raw IQ layouts.
FORMATS = ("sigmf", "wav") + tuple(RAW_FORMATS)

_ISO_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(\.\d+)?"
                     r"(Z|[+-]\d\d:?\d\d)?$")


def iso_to_unix(iso: str) -> tuple[int, float]:
    """ISO-8601 time (``2020-01-01T12:00:00.25Z``) as (whole Unix seconds, fraction).

    Split in two, as GNU Radio's ``rx_time`` tag is, so that nanosecond digits survive:
    a float of Unix seconds keeps only about a quarter of a microsecond. Raises ValueError.
    """
    m = _ISO_RE.match(iso.strip()) if isinstance(iso, str) else None
    if m is None:
        raise ValueError(f"not an ISO-8601 time: {iso!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    tz = m.group(8)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[-2:]) * 60)
    return secs, float("0" + m.group(7)) if m.group(7) else 0.0


class Recording:
    """An open recording: its metadata as attributes, its samples through :meth:`read`."""

    def __init__(self, path: str, layout: Layout, samp_rate: float,
                 center_freq: float | None, captures: list[Capture]):
        dt = layout.datatype
        self.path = path
        self.datatype = dt.name
        self.samp_rate = samp_rate
        self.center_freq = center_freq
        self.captures = captures
        self.datetime = captures[0].datetime if captures else None
        self.description = layout.description
        if layout.num_channels > 1:
            log.warning("%s: %d interleaved channels; reading channel 0", path, layout.num_channels)
        sample_bytes = dt.sample_size * layout.num_channels
        self.num_samples, extra = divmod(layout.nbytes, sample_bytes)
        self.truncated = extra != 0
        if self.num_samples == 0:
            raise InputError(f"{path}: shorter than one sample ({layout.nbytes} bytes; "
                             f"a {dt.name} sample is {sample_bytes})")
        if self.truncated:
            log.warning("%s: the last %d byte(s) are not a whole sample; truncated to %d samples",
                        path, extra, self.num_samples)
        ncomp = 2 if dt.is_complex else 1
        count = self.num_samples * layout.num_channels * ncomp
        if layout.buffer is not None:
            flat = np.frombuffer(layout.buffer, dtype=dt.component, count=count, offset=layout.offset)
        else:
            flat = np.memmap(layout.data_path, dtype=dt.component, mode="r",
                             offset=layout.offset, shape=(count,))
        self._dt = dt
        self._data = flat.reshape(self.num_samples, layout.num_channels, ncomp)  # (sample, channel, I/Q)
        # Samples stored as native complex64 need no arithmetic: a view, then one copy per read.
        native = dt.is_complex and dt.component == np.dtype("<f4") and layout.num_channels == 1
        self._native = flat.view(np.complex64) if native else None
        # 32-bit integers do not fit float32's 24-bit mantissa; scale them in float64.
        self._work = np.float64 if dt.component.kind in "iu" and dt.component.itemsize >= 4 \
            else np.float32

    def read(self, start: int, count: int) -> np.ndarray:
        """Up to ``count`` samples from sample index ``start``, as complex64 (fewer at the end)."""
        if self._data is None:
            raise ValueError(f"{self.path}: recording is closed")
        start = max(0, int(start))
        stop = min(self.num_samples, start + max(0, int(count)))
        if stop <= start:
            return np.zeros(0, dtype=np.complex64)
        if self._native is not None:
            return np.array(self._native[start:stop], dtype=np.complex64)
        v = self._data[start:stop, 0, :].astype(self._work)    # (m, I/Q), channel 0
        if self._dt.offset:
            v -= self._dt.offset
        if self._dt.scale != 1.0:
            v *= self._dt.scale
        out = np.empty(stop - start, dtype=np.complex64)
        out.real = v[:, 0]
        out.imag = v[:, 1] if self._dt.is_complex else 0.0
        return out

    def close(self) -> None:
        """Drop the memory map (the file closes when no array read from it still views it)."""
        self._data = self._native = None

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Recording({self.path!r}, {self.datatype}, {self.num_samples} samples at "
                f"{self.samp_rate:g} S/s, centre {self.center_freq})")


def _kind_by_name(path: str) -> str | None:
    lower = path.lower()
    for suffix, kind in ((".sigmf-meta", "sigmf"), (".sigmf-data", "sigmf-data"),
                         (".sigmf", "archive"), (".wav", "wav")):
        if lower.endswith(suffix):
            return kind
    ext = os.path.splitext(lower)[1].lstrip(".")
    return ext if ext in RAW_FORMATS else None


def _locate(path: str, fmt: str | None) -> Layout:
    if not os.path.exists(path):
        # A SigMF recording may be named by its base name, as sigmf's own tools accept.
        for suffix in (".sigmf-meta", ".sigmf"):
            if os.path.isfile(path + suffix):
                return _locate(path + suffix, fmt)
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a recording")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty file")
    kind = _kind_by_name(path)
    meta = path[: -len(".sigmf-data")] + ".sigmf-meta" if kind == "sigmf-data" else None
    if fmt in RAW_FORMATS:
        if kind in ("sigmf", "archive", "wav") or (meta and os.path.isfile(meta)):
            log.warning("%s: --format %s ignored: the file says its own datatype", path, fmt)
        else:
            return locate_raw(path, fmt)
    elif fmt == "wav":
        kind = "wav"
    elif fmt == "sigmf" and kind not in ("sigmf", "sigmf-data", "archive"):
        kind = "archive" if tarfile.is_tarfile(path) else "sigmf"
    if kind == "sigmf":
        return locate_sigmf(path)
    if kind == "sigmf-data":
        if not os.path.isfile(meta):
            raise InputError(f"{path}: SigMF data without its metadata file ({meta} is missing)")
        return locate_sigmf(meta)
    if kind == "archive":
        return locate_sigmf_archive(path)
    if kind == "wav":
        return locate_wav(path)
    if kind in RAW_FORMATS:
        return locate_raw(path, kind)
    raise InputError(f"{path}: unknown file type: give --format (one of {', '.join(FORMATS)})")


def _positive_rate(path: str, rate, source: str) -> float:
    rate = float(rate)
    if not math.isfinite(rate) or rate <= 0:
        raise InputError(f"{path}: sample rate must be positive, got {rate:g} ({source})")
    return rate


def _check_datetime(path: str, cap: Capture) -> Capture:
    if cap.datetime is None:
        return cap
    try:
        iso_to_unix(cap.datetime)
    except ValueError:
        log.warning("%s: core:datetime %r is not an ISO-8601 time; ignored", path, cap.datetime)
        return Capture(cap.sample_start, cap.center_freq, None)
    return cap


def open_recording(path, *, format: str | None = None, samp_rate: float | None = None,
                   center_freq: float | None = None) -> Recording:
    """Open a recording, finding its kind from its name unless ``format`` (one of FORMATS) says.

    ``path`` may be a ``.sigmf-meta``, its ``.sigmf-data``, their base name, a ``.sigmf``
    archive, a ``.wav`` or a raw IQ file. ``samp_rate`` (S/s) and ``center_freq`` (Hz), when
    given, override what the file says (a warning says so when they disagree); raw files
    need ``samp_rate``. Raises InputError for any problem with the input.
    """
    path = os.fspath(path)
    fmt = format.strip().lower() if isinstance(format, str) and format.strip() else None
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"{path}: unknown --format {format!r} (one of {', '.join(FORMATS)})")
    try:
        layout = _locate(path, fmt)
    except FileNotFoundError as e:
        raise InputError(f"{e.filename or path}: no such file") from None
    except OSError as e:
        raise InputError(f"{e.filename or path}: cannot read ({e.strerror or e})") from None

    if samp_rate is not None:
        rate = _positive_rate(path, samp_rate, "--samp-rate")
        if layout.samp_rate is not None and not math.isclose(rate, layout.samp_rate):
            log.warning("%s: --samp-rate %g overrides the file's %g S/s", path, rate,
                        layout.samp_rate)
    elif layout.samp_rate is None:
        raise InputError(f"{path}: no sample rate: give --samp-rate")
    else:
        rate = _positive_rate(path, layout.samp_rate, "as the file says")

    captures = list(layout.captures) or [Capture(0, layout.center_freq, None)]
    freq = layout.center_freq
    if center_freq is not None:
        center_freq = float(center_freq)
        if not math.isfinite(center_freq):
            raise InputError(f"{path}: centre frequency must be finite, got {center_freq:g}")
        if freq is not None and not math.isclose(center_freq, freq):
            log.warning("%s: --freq %g overrides the file's %g Hz", path, center_freq, freq)
        # A wrong centre is usually a constant offset (an upconverter, a mislabelled
        # recorder), so later retunes keep their distance from the first capture.
        shift = center_freq - freq if freq is not None else 0.0
        captures = [Capture(c.sample_start,
                            center_freq if i == 0 else
                            (c.center_freq + shift if c.center_freq is not None else None),
                            c.datetime) for i, c in enumerate(captures)]
        freq = center_freq
    captures = [_check_datetime(path, c) for c in captures]
    rec = Recording(path, layout, rate, freq, captures)
    for note in layout.notes:
        log.warning("%s", note)
    return rec
