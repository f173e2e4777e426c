"""Wideband scenes: a capture with several emitters placed in frequency and time, as SigMF.

    scene = Scene(samp_rate=20e6, center_freq=2.44e9, duration_s=0.05, seed=7, emitters=[
        Emitter("wifi", freq_hz=-5e6, snr_db=20, burst=True),
        Emitter("ble", freq_hz=6e6, snr_db=15, burst=True, hop_hz=[2e6, 6e6, 8e6],
                hop_dwell_s=0.01),
        Emitter("modulation:qpsk", freq_hz=3e6, snr_db=10, start_s=0.01, duration_s=0.02,
                params={"sps": 8})])
    iq, annotations = render(scene)
    write_sigmf(scene, "out/scene")            # out/scene.sigmf-meta + .sigmf-data

Each emitter is generated at the capture's rate by its waveform generator, passed through its
own channel (:class:`~spectrumfm.synth.impairments.Impairments`), set to its in-band SNR over
the receiver's noise floor (unit variance per sample before scaling, as in the datasets),
moved to its frequency and added; then the receiver's own impairments apply to the sum.

Annotations: one per emitter, or one per hop for a hopping emitter (each hop is somewhere
else in frequency), with ``core:sample_start``/``core:sample_count`` spanning the samples
where it transmits, ``core:freq_lower_edge``/``core:freq_upper_edge`` its occupied band,
``core:label`` its id, and ``spectrumfm:snr_db`` (in-band SNR), ``spectrumfm:emitter``
(its index in the scene) and ``spectrumfm:bandwidth`` in the ``spectrumfm`` extension.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os

import numpy as np

from spectrumfm.errors import InputError
from spectrumfm.synth.core import freq_shift
from spectrumfm.synth.dataset import noise, signal_level
from spectrumfm.synth.recipe import resolve_waveform

__all__ = ["Emitter", "Scene", "render", "write_sigmf", "random_scene", "load_scene",
           "SIGMF_DATATYPES"]

log = logging.getLogger("spectrumfm")
#: Datatypes a scene can be written as: float, 16-bit (USRP) and 8-bit (RTL-SDR, HackRF).
SIGMF_DATATYPES = ("cf32_le", "ci16_le", "ci8", "cu8")
EXTENSION = {"name": "spectrumfm", "version": "1.0.0", "optional": True}


@dataclasses.dataclass
class Emitter:
    """One transmitter in a scene.

    Attributes:
        signal: waveform id: a technology id, a modulation id, or ``family:id``.
        freq_hz: its centre, from the capture's centre frequency (Hz).
        snr_db: its in-band SNR over the receiver noise floor (dB).
        start_s: when it starts, from the start of the capture (s).
        duration_s: how long it lasts (s); None: to the end of the capture.
        burst: use the waveform's own on/off pattern (packets, TDD) instead of a steady fill.
        hop_hz: centres (Hz from the capture's centre) it hops among, in turn; None: no hops.
        hop_dwell_s: time on each hop (s).
        impairments: its channel, as :class:`~spectrumfm.synth.impairments.Impairments` keys.
        params: fixed parameters for its generator (e.g. ``{"bandwidth_mhz": 5}``).
        label: the annotation's ``core:label``; None: the waveform id.
    """

    signal: str
    freq_hz: float = 0.0
    snr_db: float = 10.0
    start_s: float = 0.0
    duration_s: float | None = None
    burst: bool = False
    hop_hz: list | None = None
    hop_dwell_s: float | None = None
    impairments: dict = dataclasses.field(default_factory=dict)
    params: dict = dataclasses.field(default_factory=dict)
    label: str | None = None


@dataclasses.dataclass
class Scene:
    """A capture: its rate (Hz), centre (Hz), length (s), emitters, seed and receiver.

    ``noise_dbfs`` places the noise floor below full scale when written (-30 dBFS is about
    4 LSB rms at 8 bits, an RTL-SDR with its gain set sensibly); ``datetime`` (ISO 8601 UTC)
    is the capture's start as written, for reproducible files (None: now).
    """

    samp_rate: float
    center_freq: float
    duration_s: float
    emitters: list
    seed: int = 0
    receiver: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    noise_dbfs: float = -30.0
    datetime: str | None = None

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.samp_rate))


def load_scene(path: str) -> Scene:
    """A scene from a YAML file::

        version: 1
        samp_rate: 20e6
        center_freq: 2.44e9
        duration_s: 0.1
        seed: 3
        receiver: {dc_offset_db: -30}          # receiver impairments (optional)
        emitters:
          - {signal: wifi, freq_hz: -5e6, snr_db: 20, burst: true}
          - {signal: ble, snr_db: 12, burst: true, hop_hz: [2e6, 6e6], hop_dwell_s: 0.01}
    """
    data = _load_yaml(path)
    if data.pop("version", 1) != 1:
        raise InputError(f"{path}: scene version must be 1")
    fields = {f.name for f in dataclasses.fields(Scene)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise InputError(f"{path}: unknown scene setting {unknown[0]!r} (known: "
                         f"{', '.join(sorted(fields))})")
    emitters = data.pop("emitters", None)
    if not isinstance(emitters, list) or not all(isinstance(e, dict) for e in emitters):
        raise InputError(f"{path}: emitters must be a list of mappings")
    efields = {f.name for f in dataclasses.fields(Emitter)}
    for i, e in enumerate(emitters):
        bad = sorted(set(e) - efields)
        if bad or "signal" not in e:
            raise InputError(f"{path}: emitter {i}: " + (f"unknown setting {bad[0]!r}" if bad
                                                         else "no signal id"))
    try:
        scene = Scene(emitters=[Emitter(**e) for e in emitters], **data)
        scene.samp_rate, scene.center_freq = float(scene.samp_rate), float(scene.center_freq)
        scene.duration_s = float(scene.duration_s)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from None
    return scene


def _load_yaml(path: str) -> dict:
    import yaml

    from spectrumfm.synth.recipe import load_yaml
    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f.read())
    except FileNotFoundError:
        raise InputError(f"{path}: no such scene file") from None
    except (OSError, UnicodeError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot read the scene ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a scene is a mapping (samp_rate, center_freq, emitters, ...)")
    return data


def _segments(e: Emitter, i: int, scene: Scene) -> list[tuple[int, int, float]]:
    """``(start, count, centre offset)`` of each stretch of emitter ``i`` (one per hop)."""
    fs, n = scene.samp_rate, scene.n_samples
    start = int(round(e.start_s * fs))
    end = n if e.duration_s is None else min(n, start + int(round(e.duration_s * fs)))
    if not 0 <= start < end:
        raise InputError(f"emitter {i} ({e.signal}): starts at {e.start_s:g} s, outside the "
                         f"{scene.duration_s:g} s capture, or lasts no time")
    if not e.hop_hz:
        return [(start, end - start, float(e.freq_hz))]
    if not (e.hop_dwell_s and e.hop_dwell_s > 0):
        raise InputError(f"emitter {i} ({e.signal}): hop_hz needs a positive hop_dwell_s")
    dwell = max(1, int(round(e.hop_dwell_s * fs)))
    return [(s, min(dwell, end - s), float(e.hop_hz[k % len(e.hop_hz)]))
            for k, s in enumerate(range(start, end, dwell))]


def _check_band(e: Emitter, i: int, f: float, bw: float, fs: float) -> None:
    if abs(f) + bw / 2 > fs / 2 * 1.0001:
        raise InputError(f"emitter {i} ({e.signal}, {bw / 1e6:.3g} MHz wide) at "
                         f"{f / 1e6:+g} MHz does not fit in the capture's "
                         f"±{fs / 2e6:g} MHz")


def render(scene: Scene, parts: list | None = None) -> tuple[np.ndarray, list[dict]]:
    """The capture's samples (complex64, unit noise variance) and its annotations.

    ``parts``, when a list, receives each emitter's own contribution to the samples (its
    signal at its level and frequency, without noise or receiver impairments; complex64,
    as long as the capture), in emitter order: what labels by received power are made from.
    """
    from spectrumfm.synth.impairments import Impairments, apply_channel, apply_receiver
    fs, n = float(scene.samp_rate), scene.n_samples
    if not (fs > 0 and n > 0):
        raise InputError(f"scene: samp_rate and duration_s must be positive, got {fs:g} Hz, "
                         f"{scene.duration_s:g} s")
    x = noise(np.random.default_rng([scene.seed, 0]), n)
    annotations = []
    for i, e in enumerate(scene.emitters):
        own = np.zeros(n, np.complex64) if parts is not None else None
        spec = resolve_waveform(e.signal, where=f"emitter {i}")
        imp = Impairments.from_dict(e.impairments, where=f"emitter {i} impairments")
        rng = np.random.default_rng([scene.seed, 1 + i])
        kw = dict(e.params)
        if spec.family == "technology":
            kw["burst"] = e.burst
        for start, count, f in _segments(e, i, scene):
            sig = spec.generate(rng, fs, count, **kw)
            _check_band(e, i, f, sig.bandwidth, fs)
            y, _ = apply_channel(sig.iq, rng, fs, imp)
            y = y * np.float32(signal_level(e.snr_db, sig.bandwidth, fs))
            y = freq_shift(y, f, fs, phase=2 * np.pi * f * start / fs)
            x[start:start + count] += y
            if own is not None:
                own[start:start + count] += y
            on = np.flatnonzero(sig.active) if sig.active is not None else np.arange(count)
            if on.size == 0:
                continue
            annotations.append({
                "core:sample_start": start + int(on[0]),
                "core:sample_count": int(on[-1] - on[0] + 1),
                "core:freq_lower_edge": scene.center_freq + f - sig.bandwidth / 2,
                "core:freq_upper_edge": scene.center_freq + f + sig.bandwidth / 2,
                "core:label": e.label or spec.name,
                "spectrumfm:snr_db": float(e.snr_db),
                "spectrumfm:emitter": i,
                "spectrumfm:bandwidth": float(sig.bandwidth)})
        if own is not None:
            parts.append(own)
    x, _ = apply_receiver(x, np.random.default_rng([scene.seed, 0, 1]),
                          Impairments.from_dict(scene.receiver, where="scene receiver"))
    annotations.sort(key=lambda a: (a["core:sample_start"], a["spectrumfm:emitter"]))
    return np.asarray(x, np.complex64), annotations


def _quantise(x: np.ndarray, datatype: str, noise_dbfs: float) -> tuple[np.ndarray, float]:
    """Samples as ``datatype`` with the noise floor at ``noise_dbfs`` (dB full scale, per
    sample) unless the strongest sample would clip, then the scale that keeps it at 0.95."""
    peak = float(np.max(np.abs(np.concatenate([x.real, x.imag])))) if x.size else 1.0
    scale = min(10 ** (noise_dbfs / 20), 0.95 / max(peak, 1e-12))
    y = x * scale
    if datatype == "cf32_le":
        return y.astype(np.complex64), scale
    full = {"ci16_le": 32767.0, "ci8": 127.0, "cu8": 127.5}[datatype]
    iq = np.empty(2 * y.size, np.float64)
    iq[0::2], iq[1::2] = y.real, y.imag
    if datatype == "cu8":
        return np.clip(np.round(iq * full + 127.5), 0, 255).astype(np.uint8), scale
    dtype = np.int16 if datatype == "ci16_le" else np.int8
    lim = np.iinfo(dtype)
    return np.clip(np.round(iq * full), lim.min, lim.max).astype(dtype), scale


def write_sigmf(scene: Scene, base: str, *, datatype: str = "cf32_le") -> tuple[str, str]:
    """Render ``scene`` and write ``base.sigmf-meta`` + ``base.sigmf-data``; returns both paths.

    The noise floor goes to ``scene.noise_dbfs``; a scene whose strongest sample would then
    clip is scaled down to keep it at 0.95 of full scale instead.
    """
    from sigmf import SigMFFile
    if datatype not in SIGMF_DATATYPES:
        raise InputError(f"datatype {datatype!r}: one of {', '.join(SIGMF_DATATYPES)}")
    parent = os.path.dirname(os.path.abspath(base))
    if not os.path.isdir(parent):
        raise InputError(f"{base}: directory {parent} does not exist")
    x, annotations = render(scene)
    data, scale = _quantise(x, datatype, scene.noise_dbfs)
    data_path, meta_path = base + ".sigmf-data", base + ".sigmf-meta"
    data.tofile(data_path)
    when = scene.datetime or datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    meta = SigMFFile(global_info={
        "core:datatype": datatype, "core:sample_rate": float(scene.samp_rate),
        "core:description": scene.description or
        f"spectrumfm synthetic scene, {len(scene.emitters)} emitters, seed {scene.seed}",
        "core:author": "gr-spectrumfm", "core:recorder": "spectrumfm.synth.scenes",
        "core:extensions": [EXTENSION],
        "spectrumfm:noise_dbfs": 20 * math.log10(scale)})
    meta.set_data_file(data_path)
    meta.add_capture(0, metadata={"core:frequency": float(scene.center_freq),
                                  "core:datetime": when})
    for a in annotations:
        meta.add_annotation(a["core:sample_start"], a["core:sample_count"],
                            metadata={k: v for k, v in a.items()
                                      if k not in ("core:sample_start", "core:sample_count")})
    meta.validate()
    tmp = meta_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(meta.dumps(pretty=True) + "\n")
    os.replace(tmp, meta_path)
    return meta_path, data_path


def random_scene(rng: np.random.Generator, samp_rate: float, center_freq: float,
                 duration_s: float, signals: list, n_emitters: int, *,
                 snr_range=(5.0, 25.0), seed: int = 0) -> Scene:
    """A scene of up to ``n_emitters`` drawn from ``signals``, placed where they fit without
    overlapping in frequency (steady or bursty, some starting late or stopping early).

    Each emitter's variant (e.g. an LTE bandwidth) is drawn here and fixed in its params, so
    the place found for it holds what :func:`render` makes.
    """
    emitters, used = [], []
    for _ in range(n_emitters):
        name = signals[int(rng.integers(len(signals)))]
        bw, params = _variant(name, samp_rate, rng)
        if bw > samp_rate * 0.9:
            continue
        for _attempt in range(50):
            f = float(rng.uniform(-samp_rate / 2 + bw / 2, samp_rate / 2 - bw / 2))
            if all(abs(f - g) > (bw + b) / 2 * 1.1 for g, b in used):
                break
        else:
            continue  # no room left for it
        used.append((f, bw))
        start = float(rng.uniform(0, duration_s / 2)) if rng.random() < 0.5 else 0.0
        dur = float(rng.uniform(duration_s / 4, duration_s - start))
        emitters.append(Emitter(name, freq_hz=f, snr_db=float(rng.uniform(*snr_range)),
                                start_s=start, duration_s=dur, burst=bool(rng.random() < 0.5),
                                params=params))
    return Scene(samp_rate, center_freq, duration_s, emitters, seed=seed)


def _variant(name: str, samp_rate: float, rng) -> tuple[float, dict]:
    """One draw of waveform ``name``'s variant: its bandwidth and the generator parameters
    (those of its reported params that the generator takes) that fix it."""
    spec = resolve_waveform(name)
    kw = {"burst": False} if spec.family == "technology" else {}
    sig = spec.generate(rng, samp_rate, 4096, **kw)
    return sig.bandwidth, {k: v for k, v in sig.params.items()
                           if k in spec.keywords and k != "burst"}
