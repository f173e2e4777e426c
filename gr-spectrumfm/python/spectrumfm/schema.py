"""Wire schema (version 1) for decisions, spectrum rows and status messages.

This module is the single definition of what the engine publishes and writes. It imports
only the standard library and numpy so that any client (the dashboard, a notebook, another
language's reader following ``docs/messages.md``) can read the stream without GNU Radio.

ZeroMQ framing: every message is a multipart message on a PUB socket::

    [topic, header]            topics b"decision", b"status", b"eos"
    [topic, header, payload]   topic  b"spectrum": payload is float32 little-endian dB

``header`` is UTF-8 JSON with at least ``v`` (schema version), ``type`` (the topic),
``seq`` (per-topic sequence number, so gaps show), ``utc`` (Unix seconds when sent),
``center_freq`` and ``samp_rate`` (Hz). A decision message's header *is* the decision object
(DESIGN.md), with ``type``, ``seq`` and ``utc`` added.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

SCHEMA_VERSION = 1

TOPIC_SPECTRUM = b"spectrum"
TOPIC_DECISION = b"decision"
TOPIC_STATUS = b"status"
TOPIC_EOS = b"eos"
TOPICS = (TOPIC_SPECTRUM, TOPIC_DECISION, TOPIC_STATUS, TOPIC_EOS)

# Tasks the engine can decide. "emission" is a detected time-frequency box before it is
# classified; the other four are DESIGN.md's tasks.
TASKS = ("occupancy", "emission", "anomaly", "technology", "modulation")

# Every decision carries these fields (DESIGN.md, schema v1). More may be added.
DECISION_FIELDS = (
    "v", "task", "label", "score", "sample_start", "sample_count", "time",
    "freq_lo", "freq_hi", "center_freq", "samp_rate", "model",
)
_DECISION_TYPES = {
    "v": int, "task": str, "label": str, "score": float, "sample_start": int,
    "sample_count": int, "time": float, "freq_lo": float, "freq_hi": float,
    "center_freq": float, "samp_rate": float, "model": str,
}


class SchemaError(ValueError):
    """A message or decision that does not follow schema version 1."""


def make_decision(*, task: str, label: str, score: float, sample_start: int,
                  sample_count: int, samp_rate: float, center_freq: float,
                  freq_lo: float, freq_hi: float, model: str,
                  time_offset: float = 0.0, **extra: Any) -> dict:
    """Build a schema-v1 decision.

    Args:
        task: one of ``TASKS``.
        label: the decided class (``"occupied"``, ``"LTE"``, ...).
        score: probability of ``label`` in [0, 1] (occupancy: probability occupied).
        sample_start: absolute index of the first sample covered, from the stream start.
        sample_count: number of samples covered.
        samp_rate: sample rate in Hz.
        center_freq: tuned centre frequency in Hz.
        freq_lo, freq_hi: absolute band edges of the decision in Hz.
        model: which model (and adapter) made it, e.g. ``"energy-detector"``.
        time_offset: seconds added to the signal time (``rx_time`` when the radio gives one).
        extra: further fields (added fields are allowed by the schema).
    """
    if task not in TASKS:
        raise SchemaError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not samp_rate > 0:
        raise SchemaError(f"samp_rate must be positive, got {samp_rate!r}")
    decision = {
        "v": SCHEMA_VERSION,
        "task": task,
        "label": str(label),
        "score": float(min(1.0, max(0.0, score))),
        "sample_start": int(sample_start),
        "sample_count": int(sample_count),
        "time": float(time_offset + sample_start / samp_rate),
        "freq_lo": float(freq_lo),
        "freq_hi": float(freq_hi),
        "center_freq": float(center_freq),
        "samp_rate": float(samp_rate),
        "model": str(model),
    }
    decision.update(extra)
    return decision


def validate_decision(obj: Mapping[str, Any]) -> None:
    """Raise ``SchemaError`` naming the first field that breaks schema v1."""
    if not isinstance(obj, Mapping):
        raise SchemaError(f"decision must be a JSON object, got {type(obj).__name__}")
    for name in DECISION_FIELDS:
        if name not in obj:
            raise SchemaError(f"decision lacks field {name!r}")
        want = _DECISION_TYPES[name]
        value = obj[name]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              if want is float else isinstance(value, want) and not isinstance(value, bool))
        if not ok:
            raise SchemaError(f"decision field {name!r} should be {want.__name__}, got {value!r}")
        if want is float and not math.isfinite(value):
            raise SchemaError(f"decision field {name!r} is not finite: {value!r}")
    if obj["v"] < 1:
        raise SchemaError(f"decision schema version {obj['v']!r} is not >= 1")
    if not 0.0 <= obj["score"] <= 1.0:
        raise SchemaError(f"decision score {obj['score']!r} outside [0, 1]")
    if obj["freq_hi"] < obj["freq_lo"]:
        raise SchemaError("decision freq_hi is below freq_lo")
    if obj["sample_count"] < 0 or obj["sample_start"] < 0:
        raise SchemaError("decision sample_start/sample_count is negative")


@dataclass
class Message:
    """One decoded ZMQ message: its topic, JSON header and (spectrum only) dB row."""

    topic: str
    header: dict
    row: np.ndarray | None = None


def encode(topic: bytes, header: Mapping[str, Any], seq: int,
           row: np.ndarray | None = None) -> list[bytes]:
    """Frame a message for a ZMQ multipart send; adds ``v``, ``type``, ``seq`` and ``utc``."""
    if topic not in TOPICS:
        raise SchemaError(f"unknown topic {topic!r}")
    full = {"v": SCHEMA_VERSION, **header, "type": topic.decode(), "seq": int(seq),
            "utc": time.time()}
    frames = [topic, json.dumps(full, separators=(",", ":"), allow_nan=False).encode()]
    if topic == TOPIC_SPECTRUM:
        if row is None:
            raise SchemaError("a spectrum message needs its row")
        frames.append(np.ascontiguousarray(row, dtype="<f4").tobytes())
    return frames


def decode(frames: Sequence[bytes]) -> Message:
    """Parse a multipart message; raise ``SchemaError`` on anything malformed.

    Messages from a newer schema version are accepted: unknown fields are kept, known ones
    keep their meaning (DESIGN.md).
    """
    if len(frames) < 2:
        raise SchemaError(f"expected at least 2 frames, got {len(frames)}")
    topic = bytes(frames[0])
    if topic not in TOPICS:
        raise SchemaError(f"unknown topic {topic[:32]!r}")
    try:
        header = json.loads(bytes(frames[1]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("v"), int):
        raise SchemaError("header is not a JSON object with an integer 'v'")
    row = None
    if topic == TOPIC_SPECTRUM:
        if len(frames) < 3:
            raise SchemaError("spectrum message without its row")
        payload = bytes(frames[2])
        if len(payload) % 4:
            raise SchemaError("spectrum row is not a whole number of float32")
        row = np.frombuffer(payload, dtype="<f4")
        fft_size = header.get("fft_size")
        if fft_size is not None and fft_size != row.size:
            raise SchemaError(f"spectrum row has {row.size} bins, header says {fft_size}")
    elif topic == TOPIC_DECISION:
        validate_decision(header)
    return Message(topic.decode(), header, row)


def decision_to_json(decision: Mapping[str, Any]) -> str:
    """One JSONL line (no newline) for ``--decisions`` files."""
    return json.dumps(decision, separators=(",", ":"), allow_nan=False)
