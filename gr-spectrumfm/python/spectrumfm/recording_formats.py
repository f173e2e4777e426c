"""Sample datatypes and the containers that hold them (SigMF, SigMF archive, raw IQ, WAV).

Each ``locate_*`` function checks one kind of file and returns a :class:`Layout`: where the
sample bytes lie, how they are encoded and what the file says about them. Reading samples is
:class:`spectrumfm.recording.Recording`'s job. Standard library, numpy and sigmf only.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import tarfile
import warnings
from dataclasses import dataclass, field

import numpy as np

from spectrumfm.errors import InputError

log = logging.getLogger("spectrumfm")

# The SigMF core:datatype grammar (schema-meta.json); 8-bit types take no byte order, and
# a missing byte order on wider types is read as little-endian, as every SDR host is.
_DATATYPE_RE = re.compile(r"^([cr])([fiu])(8|16|32|64)(_le|_be)?$")

# Raw IQ as SDR tools write it, named by extension or --format: GNU Radio's file sink
# (cf32/cfile/fc32), HackRF (cs8), rtl_sdr (cu8), USRP/bladeRF/SoapySDR (ci16/cs16).
RAW_FORMATS = {
    "cf32": "cf32_le", "cfile": "cf32_le", "fc32": "cf32_le", "cf64": "cf64_le",
    "ci16": "ci16_le", "cs16": "ci16_le", "ci8": "ci8", "cs8": "ci8", "cu8": "cu8",
}


@dataclass(frozen=True)
class Datatype:
    """How one sample is stored, and the affine map that takes it to a float in [-1, 1)."""

    name: str
    component: np.dtype      # one stored value: I, Q, or the real sample
    is_complex: bool
    offset: float            # subtracted first: the mid-point of unsigned integers
    scale: float             # then multiplied: 1 / 2**(bits - 1) for integers

    @property
    def sample_size(self) -> int:
        """Bytes per sample (both components of a complex sample)."""
        return self.component.itemsize * (2 if self.is_complex else 1)


def parse_datatype(name: str) -> Datatype | None:
    """A SigMF datatype name (``ci16_le``, ``cu8``, ``rf64_be``...) or None if it is not one."""
    m = _DATATYPE_RE.match(name.lower()) if isinstance(name, str) else None
    if m is None:
        return None
    cplx, kind, bits, order = m.group(1) == "c", m.group(2), int(m.group(3)), m.group(4)
    if (kind == "f" and bits not in (32, 64)) or (kind != "f" and bits == 64):
        return None
    endian = ">" if order == "_be" else "<"
    component = np.dtype(f"{endian}{kind}{bits // 8}")
    if kind == "f":
        return Datatype(name, component, cplx, 0.0, 1.0)
    scale = 1.0 / 2 ** (bits - 1)
    offset = (2**bits - 1) / 2 if kind == "u" else 0.0
    return Datatype(name, component, cplx, offset, scale)


@dataclass
class Capture:
    """A SigMF capture segment: from ``sample_start`` on, the recording was tuned here."""

    sample_start: int
    center_freq: float | None
    datetime: str | None     # ISO-8601 UTC, or None


@dataclass
class Layout:
    """Where a recording's samples are and what its container says about them."""

    data_path: str           # the file the samples are mapped from
    offset: int              # byte offset of the first sample
    nbytes: int              # bytes of sample data (need not be whole samples)
    datatype: Datatype
    samp_rate: float | None = None
    center_freq: float | None = None
    captures: list[Capture] = field(default_factory=list)
    description: str = ""
    num_channels: int = 1
    buffer: bytes | None = None   # samples already in memory (compressed archives)
    notes: list[str] = field(default_factory=list)   # warnings, logged once the file opens


def _read_json(meta_path: str, raw: bytes) -> dict:
    if not raw.strip():
        raise InputError(f"{meta_path}: empty file")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{meta_path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{meta_path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("global"), dict):
        raise InputError(f"{meta_path}: not SigMF metadata (no 'global' object)")
    return meta


def _as_float(meta_path: str, key: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{meta_path}: {key} must be a number, got {value!r}")
    return float(value)


def _as_count(meta_path: str, key: str, value) -> int:
    """A non-negative whole number (JSON writers sometimes put 1024.0 for 1024)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{meta_path}: {key} must be a whole number >= 0, got {value!r}")
    return value


def _sigmf_fields(meta_path: str, meta: dict):
    """The fields we use, checked by us (for one-line messages), then the whole by sigmf."""
    from sigmf.sigmffile import SigMFFile  # sigmf pulls in jsonschema: only load it if needed

    g = meta["global"]
    name = g.get("core:datatype")
    if name is None:
        raise InputError(f"{meta_path}: no core:datatype")
    datatype = parse_datatype(name)
    if datatype is None:
        raise InputError(f"{meta_path}: unknown SigMF datatype {name!r}")
    raw_caps = meta.setdefault("captures", [])
    if not isinstance(raw_caps, list) or not all(isinstance(c, dict) for c in raw_caps):
        raise InputError(f"{meta_path}: 'captures' must be a list of objects")
    meta.setdefault("annotations", [])
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # undeclared-extension notices are not our user's concern
        try:
            SigMFFile(metadata=meta).validate()
        except Exception as e:  # noqa: BLE001 -- advisory only, whatever the validator trips on
            # Recordings in the wild often miss some required key (core:version...) yet are
            # perfectly readable; refusing them would help nobody, so say it and go on.
            # Noted rather than logged: a file refused for another reason below gets one
            # line, its error, not first a warning about the same field.
            why = str(getattr(e, "message", e)).splitlines()[0]
            notes.append(f"{meta_path}: not valid SigMF ({why}); reading it anyway")
    starts = [_as_count(meta_path, "core:sample_start", c.get("core:sample_start", 0))
              for c in raw_caps]
    ordered = [c for _, c in sorted(zip(starts, raw_caps), key=lambda sc: sc[0])]
    captures = []
    for start, c in zip(sorted(starts), ordered):
        dt = c.get("core:datetime")
        captures.append(Capture(start, _as_float(meta_path, "core:frequency",
                                                 c.get("core:frequency")),
                                dt if isinstance(dt, str) else None))
    if not captures or captures[0].sample_start != 0:
        captures.insert(0, Capture(0, None, None))
    header = _as_count(meta_path, "core:header_bytes",
                       ordered[0].get("core:header_bytes", 0)) if ordered else 0
    if any(c.get("core:header_bytes", 0) for c in ordered[1:]):
        raise InputError(f"{meta_path}: core:header_bytes between captures is not supported")
    desc = g.get("core:description")
    return dict(
        datatype=datatype,
        samp_rate=_as_float(meta_path, "core:sample_rate", g.get("core:sample_rate")),
        center_freq=captures[0].center_freq, captures=captures,
        description=desc if isinstance(desc, str) else "",
        num_channels=max(1, _as_count(meta_path, "core:num_channels",
                                      g.get("core:num_channels", 1))),
        header=header,
        trailing=_as_count(meta_path, "core:trailing_bytes", g.get("core:trailing_bytes", 0)),
        dataset=g.get("core:dataset"), metadata_only=bool(g.get("core:metadata_only")),
        notes=notes,
    )


def locate_sigmf(meta_path: str) -> Layout:
    """A ``.sigmf-meta`` file and its dataset (``.sigmf-data`` or the one core:dataset names)."""
    with open(meta_path, "rb") as f:
        fields = _sigmf_fields(meta_path, _read_json(meta_path, f.read()))
    if fields["metadata_only"]:
        raise InputError(f"{meta_path}: metadata-only recording (core:metadata_only), no samples")
    dataset = fields["dataset"]
    if dataset:
        # core:dataset is a file name beside the metadata; a path could point anywhere.
        if not isinstance(dataset, str) or os.path.basename(dataset) != dataset \
                or dataset in (".", ".."):
            raise InputError(f"{meta_path}: core:dataset must be a file name, got {dataset!r}")
        data_path = os.path.join(os.path.dirname(meta_path), dataset)
    else:
        data_path = meta_path[: -len(".sigmf-meta")] + ".sigmf-data"
    if not os.path.isfile(data_path):
        raise InputError(f"{meta_path}: no data file (expected {data_path})")
    size = os.path.getsize(data_path)
    if size == 0:
        raise InputError(f"{data_path}: empty file")
    return _sigmf_layout(data_path, fields, size)


def _sigmf_layout(data_path: str, fields: dict, size: int, start: int = 0, buffer=None) -> Layout:
    nbytes = size - fields["header"] - fields["trailing"]
    if nbytes < 0:
        raise InputError(f"{data_path}: shorter than the header and trailing bytes "
                         "its metadata declares")
    return Layout(data_path, start + fields["header"], nbytes, fields["datatype"],
                  fields["samp_rate"], fields["center_freq"], fields["captures"],
                  fields["description"], fields["num_channels"], buffer, fields["notes"])


def _safe_member(name: str) -> bool:
    norm = posixpath.normpath(name)
    return not (name.startswith(("/", "\\")) or norm == ".." or norm.startswith("../")
                or "\\" in name or re.match(r"^[A-Za-z]:", name))


def locate_sigmf_archive(path: str) -> Layout:
    """A ``.sigmf`` archive (tar), read in place: never extracted, so no member is written.

    sigmf's own archive reader takes the first ``.sigmf-data`` member whatever metadata it
    belongs to, and hides the byte offset we need to map samples with our own datatypes;
    so the tar is walked here and only the metadata is handed to sigmf.
    """
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError) as e:
        raise InputError(f"{path}: not a SigMF archive (not a tar file: {e})") from None
    with tar:
        compressed = _is_compressed(path)
        members = tar.getmembers()
        for m in members:
            if not _safe_member(m.name):
                raise InputError(f"{path}: unsafe member name {m.name!r} in archive")
        files = {m.name: m for m in members if m.isfile()}
        metas = sorted(n for n in files if n.endswith(".sigmf-meta"))
        if not metas:
            raise InputError(f"{path}: no .sigmf-meta member in archive")
        if len(metas) > 1:
            log.warning("%s: %d recordings in archive; reading %s", path, len(metas), metas[0])
        meta_name = f"{path}:{metas[0]}"
        fields = _sigmf_fields(meta_name, _read_json(meta_name, tar.extractfile(files[metas[0]]).read()))
        data_name = metas[0][: -len(".sigmf-meta")] + ".sigmf-data"
        if data_name not in files and isinstance(fields["dataset"], str):
            data_name = posixpath.join(posixpath.dirname(metas[0]), fields["dataset"])
        if data_name not in files:
            raise InputError(f"{meta_name}: no data file in archive (expected {data_name})")
        member = files[data_name]
        if member.size == 0:
            raise InputError(f"{path}:{data_name}: empty file")
        if compressed:
            data = tar.extractfile(member).read()
            return _sigmf_layout(path, fields, member.size, 0, data)
        return _sigmf_layout(path, fields, member.size, member.offset_data)


def _is_compressed(path: str) -> bool:
    with open(path, "rb") as f:
        magic = f.read(6)
    return magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def locate_raw(path: str, fmt: str) -> Layout:
    """Headerless interleaved IQ: the whole file is samples, nothing says the rate."""
    return Layout(path, 0, os.path.getsize(path), parse_datatype(RAW_FORMATS[fmt]))


# WAVE format tags; Python's wave module (3.11) reads only integer PCM, while SDR++ writes
# float32 IQ and SDR# an extensible header, so the RIFF chunks are walked here instead.
_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 1, 3, 0xFFFE
_WAV_DATATYPES = {(_WAVE_PCM, 8): "cu8", (_WAVE_PCM, 16): "ci16_le", (_WAVE_PCM, 32): "ci32_le",
                  (_WAVE_FLOAT, 32): "cf32_le", (_WAVE_FLOAT, 64): "cf64_le"}


def locate_wav(path: str) -> Layout:
    """Two-channel WAV baseband (left = I, right = Q), as SDR#, SDR++ and HDSDR record."""
    size = os.path.getsize(path)
    fmt = data = None
    center = None
    with open(path, "rb") as f:
        head = f.read(12)
        # RF64/BW64 (recordings over 4 GiB) put the real sizes in a ds64 chunk and 0xFFFFFFFF
        # in the data chunk, which the rest-of-file rule below already handles.
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
            raise InputError(f"{path}: not a WAV file (no RIFF/WAVE header)")
        pos = 12
        while pos + 8 <= size and data is None:
            f.seek(pos)
            chunk = f.read(8)
            cid, clen = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if cid == b"fmt ":
                fmt = f.read(min(clen, 40))
            elif cid == b"auxi" and clen >= 36:
                # SpectraVue's aux chunk (SDR#, HDSDR): two SYSTEMTIMEs, then CenterFreq (Hz).
                center = int.from_bytes(f.read(36)[32:36], "little") or None
            elif cid == b"data":
                # Recorders stopped abruptly leave 0 or a stale size: the rest of the file is data.
                avail = size - pos - 8
                data = (pos + 8, clen if 0 < clen <= avail else avail)
            pos += 8 + clen + (clen & 1)
    if fmt is None or len(fmt) < 16 or data is None:
        raise InputError(f"{path}: not a WAV file (no fmt or data chunk)")
    tag, channels, rate = (int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[2:4], "little"),
                           int.from_bytes(fmt[4:8], "little"))
    bits = int.from_bytes(fmt[14:16], "little")
    if tag == _WAVE_EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")   # the sub-format GUID starts with the tag
    if channels != 2:
        raise InputError(f"{path}: WAV has {channels} channel(s); an IQ recording has 2 (I and Q)")
    name = _WAV_DATATYPES.get((tag, bits))
    if name is None:
        raise InputError(f"{path}: unsupported WAV sample format (format tag {tag}, {bits} bits)")
    if data[1] == 0:
        raise InputError(f"{path}: empty file (no samples in the WAV data chunk)")
    datetime = None
    m = re.search(r"_(\d{8})_(\d{6})Z_", os.path.basename(path))
    if m:   # SDR# names its files in UTC: SDRSharp_20200101_120000Z_100000000Hz_IQ.wav
        d, t = m.groups()
        datetime = f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}Z"
    if center is None:
        m = re.search(r"(?<![0-9])(\d+)Hz", os.path.basename(path))
        center = float(m.group(1)) if m else None
    center = float(center) if center is not None else None
    return Layout(path, data[0], data[1], parse_datatype(name), float(rate), center,
                  [Capture(0, center, datetime)])
