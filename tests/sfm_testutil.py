"""Helpers for the system tests: the installed command, scenes and file writers.

The system tests run what a user runs: the `spectrumfm` command installed in .venv by
`make install`, from a temporary directory, never the source tree.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SPECTRUMFM = VENV_BIN / "spectrumfm"

SCENE_RATE = 250_000.0
SCENE_FREQ = 433.92e6
# A steady narrowband emitter and a burst, in known places (Hz from centre, seconds).
TONE_HZ = 50_000.0
BURST_HZ = -80_000.0
BURST_S = (0.30, 0.50)


def make_scene(seconds=0.8, seed=1):
    """The data generator's scene (spectrumfm.synth.scenes): noise of RMS 0.01, a steady
    5 kBd GMSK carrier at TONE_HZ and a 10 kBd QPSK burst at BURST_HZ during BURST_S, both
    at 25 dB in-band SNR."""
    from spectrumfm.synth.scenes import Emitter, Scene, render

    scene = Scene(SCENE_RATE, SCENE_FREQ, seconds, seed=seed, emitters=[
        Emitter("modulation:gmsk", freq_hz=TONE_HZ, snr_db=25.0, params={"sps": 50}),
        Emitter("modulation:qpsk", freq_hz=BURST_HZ, snr_db=25.0, start_s=BURST_S[0],
                duration_s=BURST_S[1] - BURST_S[0], params={"sps": 25, "rolloff": 0.35})])
    x, _ = render(scene)
    return (x * np.float32(0.01)).astype(np.complex64)


def _interleave(x, dtype, scale, offset=0.0):
    iq = np.empty(2 * x.size, np.float64)
    iq[0::2], iq[1::2] = x.real, x.imag
    return np.clip(np.round(iq * scale + offset), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)


def write_raw(path: Path, x, fmt):
    """Raw interleaved IQ as a user's SDR tool would write it."""
    if fmt in ("cf32", "cfile", "fc32"):
        x.astype("<c8").tofile(path)
    elif fmt in ("ci16", "cs16"):
        _interleave(x, np.int16, 32768).astype("<i2").tofile(path)
    elif fmt in ("cs8", "ci8"):
        _interleave(x, np.int8, 128).tofile(path)
    elif fmt == "cu8":
        _interleave(x, np.uint8, 128, 127.5).tofile(path)
    else:
        raise ValueError(fmt)
    return path


def write_sigmf(base: Path, x, datatype="ci16_le", freq=SCENE_FREQ, rate=SCENE_RATE):
    """A SigMF pair, metadata as plain JSON (independent of the reader under test)."""
    kind, _, endian = datatype.partition("_")
    order = ">" if endian == "be" else "<"
    if kind == "cf32":
        data = x.astype(order + "c8").tobytes()
    elif kind == "ci16":
        data = _interleave(x, np.int16, 32768).astype(order + "i2").tobytes()
    elif kind == "ci8":
        data = _interleave(x, np.int8, 128).tobytes()
    elif kind == "cu8":
        data = _interleave(x, np.uint8, 128, 127.5).tobytes()
    else:
        raise ValueError(datatype)
    base.with_suffix(".sigmf-data").write_bytes(data)
    meta = {"global": {"core:datatype": datatype, "core:sample_rate": rate, "core:version": "1.0.0"},
            "captures": [{"core:sample_start": 0, "core:frequency": freq,
                          "core:datetime": "2026-01-01T00:00:00Z"}],
            "annotations": []}
    path = base.with_suffix(".sigmf-meta")
    path.write_text(json.dumps(meta))
    return path


def write_wav(path: Path, x, rate=SCENE_RATE):
    """Two-channel 16-bit baseband WAV (left I, right Q), as SDR# and SDR++ write it."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(_interleave(x, np.int16, 32768).astype("<i2").tobytes())
    return path


def run_cli(*args, timeout=120, cwd=None, env=None):
    """Run the installed command; returns CompletedProcess with text output."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("DISPLAY", None)
    return subprocess.run([str(SPECTRUMFM), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=full_env)


def read_jsonl(path: Path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class full_disk_file:
    """A simulated full disk (replaces a block's file object in a test): takes ``room``
    bytes, then writes part of the next buffer and raises ENOSPC, as a real write does."""

    def __init__(self, raw, room):
        self.raw, self.room = raw, room

    def write(self, buf):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.raw.write(buf[:self.room])
        self.room -= n
        return n

    def truncate(self, size):
        return self.raw.truncate(size)

    def close(self):
        self.raw.close()
