"""The recording reader alone (no GNU Radio): every datatype and container, every bad input."""

import io
import itertools
import json
import logging
import math
import tarfile
import wave

import numpy as np
import pytest

from spectrumfm.errors import InputError
from spectrumfm.recording import FORMATS, iso_to_unix, open_recording

WIDTHS = {"f32": ("f", 4), "f64": ("f", 8), "i32": ("i", 4), "i16": ("i", 2), "i8": ("i", 1),
          "u32": ("u", 4), "u16": ("u", 2), "u8": ("u", 1)}
DATATYPES = [f"{c}{w}{e}" for c, w, e in itertools.product("cr", WIDTHS, ("_le", "_be"))
             if not w.endswith("8")] + [f"{c}{w}" for c in "cr" for w in ("i8", "u8")]


def stored_values(kind, size):
    """16 stored values with the extremes of the type, in the type's own range."""
    if kind == "f":
        return np.array([0, 0.5, -1, 0.999, 1e-3, -0.25, 3.0, -7.5] * 2, dtype=np.float64)
    info = np.iinfo(f"{kind}{size}")
    return np.array([info.min, info.max, 0, 1, info.min + 1, info.max // 2, 3, info.max - 1,
                     5, 7, info.max // 3, info.min // 2, 100, 17, 2, info.max - 5], dtype=np.float64)


def expected(values, kind, size, is_complex):
    """The reader's contract: signed ints / 2**(bits-1); unsigned about their mid-point."""
    bits = 8 * size
    f = values if kind == "f" else (values - (2**bits - 1) / 2 * (kind == "u")) / 2 ** (bits - 1)
    return (f[0::2] + 1j * f[1::2] if is_complex else f + 0j).astype(np.complex64)


def write_meta(path, datatype, rate=1e6, captures=None, **glob):
    meta = {"global": {"core:datatype": datatype, "core:version": "1.2.0", **glob},
            "captures": captures if captures is not None else [{"core:sample_start": 0}],
            "annotations": []}
    if rate is not None:
        meta["global"]["core:sample_rate"] = rate
    path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_sigmf_datatype_exact(tmp_path, datatype):
    cplx, width = datatype[0] == "c", datatype[1:4].rstrip("_")
    kind, size = WIDTHS[width]
    order = ">" if datatype.endswith("_be") else "<"
    values = stored_values(kind, size)
    (tmp_path / "x.sigmf-data").write_bytes(values.astype(f"{order}{kind}{size}").tobytes())
    write_meta(tmp_path / "x.sigmf-meta", datatype, rate=2e6)
    rec = open_recording(tmp_path / "x.sigmf-meta")
    want = expected(values, kind, size, cplx)
    assert (rec.datatype, rec.num_samples, rec.samp_rate, rec.truncated) == \
        (datatype, len(want), 2e6, False)
    out = rec.read(0, 1000)
    assert out.dtype == np.complex64
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(rec.read(3, 2), want[3:5])
    if kind != "f":
        assert np.all(np.abs(out.real) <= 1) and np.all(np.abs(out.imag) <= 1)
    rec.close()


def test_cu8_scaling_is_rtl_sdr_midpoint(tmp_path):
    np.array([0, 255, 127, 128], np.uint8).tofile(tmp_path / "a.cu8")
    out = open_recording(tmp_path / "a.cu8", samp_rate=2.4e6).read(0, 9)
    np.testing.assert_array_equal(out, np.array([-127.5 / 128 + 127.5j / 128,
                                                 -0.5 / 128 + 0.5j / 128], np.complex64))


def test_sigmf_written_by_sigmf_package(tmp_path):
    from sigmf import SigMFFile

    x = (np.arange(64) * (1 - 0.5j)).astype(np.complex64)
    x.tofile(tmp_path / "pkg.sigmf-data")
    sf = SigMFFile(data_file=str(tmp_path / "pkg.sigmf-data"),
                   global_info={"core:datatype": "cf32_le", "core:sample_rate": 48e3,
                                "core:description": "tone"})
    sf.add_capture(0, metadata={"core:frequency": 433.92e6,
                                "core:datetime": "2024-05-01T12:00:00.5Z"})
    sf.add_capture(32, metadata={"core:frequency": 434.0e6})
    sf.tofile(str(tmp_path / "pkg.sigmf-meta"))
    for name in ("pkg.sigmf-meta", "pkg.sigmf-data", "pkg"):    # all three name one recording
        rec = open_recording(tmp_path / name)
        np.testing.assert_array_equal(rec.read(0, 100), x)
        assert (rec.samp_rate, rec.center_freq, rec.description) == (48e3, 433.92e6, "tone")
        assert rec.datetime == "2024-05-01T12:00:00.5Z"
        assert [(c.sample_start, c.center_freq) for c in rec.captures] == \
            [(0, 433.92e6), (32, 434.0e6)]


def test_sigmf_archive_by_sigmf_package_and_compressed(tmp_path):
    from sigmf import SigMFFile

    x = (np.arange(100) - 50j).astype(np.complex64)
    (tmp_path / "a.sigmf-data").write_bytes((x * 100).astype("<c8").view("<f4")
                                            .astype("<i2").tobytes())
    sf = SigMFFile(data_file=str(tmp_path / "a.sigmf-data"),
                   global_info={"core:datatype": "ci16_le", "core:sample_rate": 1e6})
    sf.add_capture(0, metadata={"core:frequency": 2.4e9})
    sf.tofile(str(tmp_path / "arch.sigmf"), toarchive=True)
    rec = open_recording(tmp_path / "arch.sigmf")
    assert (rec.num_samples, rec.center_freq) == (100, 2.4e9)
    np.testing.assert_array_equal(rec.read(0, 200), (x * 100 / 32768).astype(np.complex64))
    assert open_recording(tmp_path / "arch").num_samples == 100        # base name finds it too
    with tarfile.open(tmp_path / "arch.sigmf") as src, \
            tarfile.open(tmp_path / "gz.sigmf", "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    np.testing.assert_array_equal(open_recording(tmp_path / "gz.sigmf").read(0, 200),
                                  rec.read(0, 200))


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("evil", ["../evil", "rec/../../evil", "/tmp/evil"])
def test_archive_with_traversal_member_is_rejected(tmp_path, evil):
    meta = json.dumps({"global": {"core:datatype": "cf32_le", "core:sample_rate": 1e6,
                                  "core:version": "1.2.0"}, "captures": [], "annotations": []})
    arch = tmp_path / "in" / "evil.sigmf"
    arch.parent.mkdir()
    _tar(arch, [("rec/rec.sigmf-meta", meta.encode()), ("rec/rec.sigmf-data", b"\0" * 64),
                (evil, b"pwned")])
    with pytest.raises(InputError, match="unsafe member name") as e:
        open_recording(arch)
    assert "evil.sigmf" in str(e.value)
    assert not (tmp_path / "evil").exists()


def test_archive_problems(tmp_path):
    _tar(tmp_path / "nometa.sigmf", [("rec/rec.sigmf-data", b"\0" * 64)])
    with pytest.raises(InputError, match="nometa.sigmf: no .sigmf-meta"):
        open_recording(tmp_path / "nometa.sigmf")
    (tmp_path / "junk.sigmf").write_bytes(b"this is no tar file" * 40)
    with pytest.raises(InputError, match="junk.sigmf: not a SigMF archive"):
        open_recording(tmp_path / "junk.sigmf")


RAW = [("cf32", "<f4"), ("cfile", "<f4"), ("fc32", "<f4"), ("cf64", "<f8"), ("ci16", "<i2"),
       ("cs16", "<i2"), ("ci8", "i1"), ("cs8", "i1"), ("cu8", "u1")]


@pytest.mark.parametrize("fmt,dtype", RAW)
def test_raw_by_extension_and_by_format(tmp_path, fmt, dtype):
    kind, size = dtype[-2], int(dtype[-1])
    values = stored_values(kind, size)
    values.astype(dtype).tofile(tmp_path / f"cap.{fmt}")
    values.astype(dtype).tofile(tmp_path / "cap.bin")
    want = expected(values, kind, size, True)
    rec = open_recording(tmp_path / f"cap.{fmt}", samp_rate=1e6)
    np.testing.assert_array_equal(rec.read(0, 100), want)
    assert rec.center_freq is None and rec.captures[0].center_freq is None
    np.testing.assert_array_equal(
        open_recording(tmp_path / "cap.bin", format=fmt, samp_rate=1e6).read(0, 100), want)
    assert fmt in FORMATS


def test_format_overrides_raw_extension(tmp_path):
    np.array([0, 255], np.uint8).tofile(tmp_path / "mislabelled.cf32")
    rec = open_recording(tmp_path / "mislabelled.cf32", format="cu8", samp_rate=1.0)
    assert rec.datatype == "cu8" and rec.num_samples == 1


def test_wav_16bit_sdrsharp_name(tmp_path):
    iq = np.array([[100, -200], [32767, -32768], [0, 1]], dtype="<i2")
    path = tmp_path / "SDRSharp_20200101_120000Z_100000000Hz_IQ.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(250000)
        w.writeframes(iq.tobytes())
    rec = open_recording(path)
    assert (rec.samp_rate, rec.center_freq, rec.num_samples) == (250000.0, 100e6, 3)
    assert rec.datetime == "2020-01-01T12:00:00Z"
    np.testing.assert_array_equal(rec.read(0, 10), (iq[:, 0] / 32768 + 1j * (iq[:, 1] / 32768))
                                  .astype(np.complex64))
    assert open_recording(path, center_freq=101e6).center_freq == 101e6


def _riff(path, tag, bits, data, channels=2, rate=48000, extra=b""):
    block = channels * bits // 8
    fmt = (tag.to_bytes(2, "little") + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
           + (rate * block).to_bytes(4, "little") + block.to_bytes(2, "little")
           + bits.to_bytes(2, "little"))
    if tag == 0xFFFE:   # WAVE_FORMAT_EXTENSIBLE, sub-format IEEE float
        fmt += (22).to_bytes(2, "little") + bits.to_bytes(2, "little") + b"\0" * 4 \
            + (3).to_bytes(2, "little") + b"\0" * 14
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + extra \
        + b"data" + len(data).to_bytes(4, "little") + data
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    return path


def test_wav_float_8bit_extensible_and_auxi(tmp_path):
    f = np.array([0.5, -0.25, 1.0, -1.0], "<f4")
    rec = open_recording(_riff(tmp_path / "baseband_145000000Hz_12-00-00_01-01-2020.wav", 3, 32,
                               f.tobytes()))
    assert (rec.center_freq, rec.samp_rate, rec.datatype) == (145e6, 48000.0, "cf32_le")
    np.testing.assert_array_equal(rec.read(0, 9), np.array([0.5 - 0.25j, 1 - 1j], np.complex64))
    rec = open_recording(_riff(tmp_path / "ext.wav", 0xFFFE, 32, f.tobytes()))
    np.testing.assert_array_equal(rec.read(0, 9), np.array([0.5 - 0.25j, 1 - 1j], np.complex64))
    auxi = b"\0" * 32 + (7_100_000).to_bytes(4, "little")
    rec = open_recording(_riff(tmp_path / "u8.wav", 1, 8, bytes([0, 255]),
                               extra=b"auxi" + (36).to_bytes(4, "little") + auxi))
    assert rec.center_freq == 7.1e6
    np.testing.assert_array_equal(rec.read(0, 9), np.array([(-127.5 + 127.5j) / 128], np.complex64))


def bad(path, *words, **kw):
    with pytest.raises(InputError) as e:
        open_recording(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    for word in (path.name, *words):
        assert word in msg, (word, msg)
    return msg


def test_bad_inputs(tmp_path):
    bad(tmp_path / "nope.cf32", "no such file", samp_rate=1e6)
    (tmp_path / "empty.cf32").write_bytes(b"")
    bad(tmp_path / "empty.cf32", "empty file", samp_rate=1e6)
    (tmp_path / "tiny.cf32").write_bytes(b"\1\2\3")
    bad(tmp_path / "tiny.cf32", "shorter than one sample", samp_rate=1e6)
    (tmp_path / "norate.cf32").write_bytes(b"\0" * 64)
    bad(tmp_path / "norate.cf32", "no sample rate: give --samp-rate")
    for rate, shown in ((-1, "got -1"), (0, "got 0"), (math.nan, "got nan"), (math.inf, "got inf")):
        bad(tmp_path / "norate.cf32", "sample rate must be positive", shown, samp_rate=rate)
    bad(tmp_path / "norate.cf32", "unknown --format 'xyz'", format="xyz", samp_rate=1e6)
    bad(tmp_path / "norate.cf32", "centre frequency", samp_rate=1e6, center_freq=math.inf)
    (tmp_path / "capture.xyz").write_bytes(b"\0" * 64)
    bad(tmp_path / "capture.xyz", "unknown file type", "--format", samp_rate=1e6)
    (tmp_path / "adir.cf32").mkdir()
    bad(tmp_path / "adir.cf32", "directory", samp_rate=1e6)


def test_bad_sigmf(tmp_path):
    (tmp_path / "bad.sigmf-meta").write_text('{\n  "global": {,\n}')
    (tmp_path / "bad.sigmf-data").write_bytes(b"\0" * 64)
    bad(tmp_path / "bad.sigmf-meta", "not valid JSON (line 2")
    (tmp_path / "blank.sigmf-meta").write_text("")
    bad(tmp_path / "blank.sigmf-meta", "empty file")
    write_meta(tmp_path / "odd.sigmf-meta", "cq7_le")
    (tmp_path / "odd.sigmf-data").write_bytes(b"\0" * 64)
    bad(tmp_path / "odd.sigmf-meta", "unknown SigMF datatype 'cq7_le'")
    write_meta(tmp_path / "alone.sigmf-meta", "cf32_le")
    bad(tmp_path / "alone.sigmf-meta", "no data file", "alone.sigmf-data")
    (tmp_path / "orphan.sigmf-data").write_bytes(b"\0" * 64)
    bad(tmp_path / "orphan.sigmf-data", "metadata", "orphan.sigmf-meta")
    write_meta(tmp_path / "neg.sigmf-meta", "cf32_le", rate=-5.0)
    (tmp_path / "neg.sigmf-data").write_bytes(b"\0" * 64)
    bad(tmp_path / "neg.sigmf-meta", "sample rate must be positive, got -5")
    write_meta(tmp_path / "nr.sigmf-meta", "cf32_le", rate=None)
    (tmp_path / "nr.sigmf-data").write_bytes(b"\0" * 64)
    bad(tmp_path / "nr.sigmf-meta", "no sample rate: give --samp-rate")
    write_meta(tmp_path / "str.sigmf-meta", "cf32_le", rate="fast")
    bad(tmp_path / "str.sigmf-meta", "core:sample_rate must be a number")
    write_meta(tmp_path / "ncd.sigmf-meta", "cf32_le", **{"core:dataset": "../../etc/passwd"})
    bad(tmp_path / "ncd.sigmf-meta", "core:dataset must be a file name")
    write_meta(tmp_path / "e.sigmf-meta", "cf32_le")
    (tmp_path / "e.sigmf-data").write_bytes(b"")
    bad(tmp_path / "e.sigmf-data", "empty file")
    write_meta(tmp_path / "cs.sigmf-meta", "cf32_le", captures=[{"core:sample_start": "zero"}])
    bad(tmp_path / "cs.sigmf-meta", "core:sample_start must be a whole number")
    write_meta(tmp_path / "cl.sigmf-meta", "cf32_le", captures={"core:sample_start": 0})
    bad(tmp_path / "cl.sigmf-meta", "'captures' must be a list")


def test_invalid_sigmf_warns_but_reads(tmp_path, caplog):
    (tmp_path / "old.sigmf-data").write_bytes(b"\0" * 16)
    (tmp_path / "old.sigmf-meta").write_text(json.dumps(
        {"global": {"core:datatype": "cf32_le", "core:sample_rate": 1e6, "core:author": 7},
         "captures": []}))
    with caplog.at_level(logging.WARNING, logger="spectrumfm"):
        assert open_recording(tmp_path / "old.sigmf-meta").num_samples == 2
    assert any("not valid SigMF" in r.getMessage() for r in caplog.records)
    caplog.clear()
    write_meta(tmp_path / "neg.sigmf-meta", "cf32_le", rate=-5.0)
    (tmp_path / "neg.sigmf-data").write_bytes(b"\0" * 16)
    with caplog.at_level(logging.WARNING, logger="spectrumfm"), pytest.raises(InputError):
        open_recording(tmp_path / "neg.sigmf-meta")
    assert not caplog.records        # refused: its one line is the error, no warning before it


def test_bad_wav(tmp_path):
    mono = tmp_path / "mono.wav"
    with wave.open(str(mono), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(b"\0" * 64)
    bad(mono, "1 channel", "2 (I and Q)")
    (tmp_path / "fake.wav").write_bytes(b"ID3 this is an mp3" * 10)
    bad(tmp_path / "fake.wav", "not a WAV file")
    bad(_riff(tmp_path / "s24.wav", 1, 24, b"\0" * 60), "unsupported WAV sample format")


def test_truncated_reads_whole_samples_and_warns(tmp_path, caplog):
    x = (np.arange(10) * (1 + 2j)).astype(np.complex64)
    (tmp_path / "t.cf32").write_bytes(x.tobytes() + b"\1\2\3")
    with caplog.at_level(logging.WARNING, logger="spectrumfm"):
        rec = open_recording(tmp_path / "t.cf32", samp_rate=1e6)
    assert rec.truncated and rec.num_samples == (10 * 8 + 3) // 8
    np.testing.assert_array_equal(rec.read(0, 100), x)
    assert any("truncated" in r.getMessage() and "t.cf32" in r.getMessage()
               for r in caplog.records)
    (tmp_path / "t.sigmf-data").write_bytes(np.arange(7, dtype="<i2").tobytes())
    write_meta(tmp_path / "t.sigmf-meta", "ci16_le")
    rec = open_recording(tmp_path / "t.sigmf-meta")
    assert rec.truncated and rec.num_samples == 3


def test_overrides_warn_and_shift_captures(tmp_path, caplog):
    (tmp_path / "o.sigmf-data").write_bytes(b"\0" * 800)
    write_meta(tmp_path / "o.sigmf-meta", "cf32_le", rate=1e6, captures=[
        {"core:sample_start": 0, "core:frequency": 100e6},
        {"core:sample_start": 50, "core:frequency": 101e6}])
    with caplog.at_level(logging.WARNING, logger="spectrumfm"):
        rec = open_recording(tmp_path / "o.sigmf-meta", samp_rate=2e6, center_freq=225e6)
    assert (rec.samp_rate, rec.center_freq) == (2e6, 225e6)
    assert [c.center_freq for c in rec.captures] == [225e6, 226e6]
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "--samp-rate" in text and "--freq" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spectrumfm"):
        open_recording(tmp_path / "o.sigmf-meta", samp_rate=1e6, center_freq=100e6)
    assert not caplog.records                       # agreeing values are not worth a warning


def test_multichannel_reads_channel_zero(tmp_path):
    inter = np.array([1, 2, 3, 4, 5, 6, 7, 8], "<f4")         # (I0 Q0 I1 Q1) per sample
    (tmp_path / "mc.sigmf-data").write_bytes(inter.tobytes())
    write_meta(tmp_path / "mc.sigmf-meta", "cf32_le", **{"core:num_channels": 2})
    np.testing.assert_array_equal(open_recording(tmp_path / "mc.sigmf-meta").read(0, 9),
                                  np.array([1 + 2j, 5 + 6j], np.complex64))


def test_read_bounds(tmp_path):
    np.arange(20, dtype="<f4").tofile(tmp_path / "r.cf32")
    rec = open_recording(tmp_path / "r.cf32", samp_rate=1.0)
    assert len(rec.read(8, 100)) == 2 and len(rec.read(10, 5)) == 0 and len(rec.read(0, -1)) == 0
    rec.close()
    with pytest.raises(ValueError):
        rec.read(0, 1)


def test_iso_to_unix():
    assert iso_to_unix("2020-01-01T00:00:00Z") == (1577836800, 0.0)
    assert iso_to_unix("2020-01-01T00:00:01.123456789Z") == (1577836801, 0.123456789)
    assert iso_to_unix("2020-01-01T01:00:00+01:00") == (1577836800, 0.0)
    with pytest.raises(ValueError):
        iso_to_unix("yesterday")
