"""The wire schema: decisions validate, messages round-trip, malformed input is refused."""

import json

import numpy as np
import pytest

from spectrumfm import schema


def decision(**kw):
    base = dict(task="occupancy", label="occupied", score=0.9, sample_start=1000, sample_count=500,
                samp_rate=1e6, center_freq=100e6, freq_lo=99.5e6, freq_hi=99.6e6, model="energy-detector")
    base.update(kw)
    return schema.make_decision(**base)


def test_make_decision_has_every_field_with_time_from_samples():
    d = decision(time_offset=10.0)
    assert set(schema.DECISION_FIELDS) <= d.keys()
    assert d["time"] == pytest.approx(10.001)
    schema.validate_decision(d)


@pytest.mark.parametrize("field, value", [("score", 1.5), ("freq_hi", 1.0), ("task", 3),
                                          ("sample_start", -1), ("v", True)])
def test_validate_rejects(field, value):
    d = decision()
    d[field] = value
    with pytest.raises(schema.SchemaError):
        schema.validate_decision(d)


def test_validate_names_missing_field():
    d = decision()
    del d["model"]
    with pytest.raises(schema.SchemaError, match="model"):
        schema.validate_decision(d)


def test_spectrum_round_trip():
    row = np.linspace(-100, 0, 256, dtype=np.float32)
    frames = schema.encode(schema.TOPIC_SPECTRUM, {"fft_size": 256, "center_freq": 1e9, "samp_rate": 2e6}, 7, row)
    msg = schema.decode(frames)
    assert msg.topic == "spectrum" and msg.header["seq"] == 7 and msg.header["v"] == 1
    np.testing.assert_array_equal(msg.row, row)


def test_decision_round_trip_and_newer_version_accepted():
    d = decision(extra_field="kept")
    msg = schema.decode(schema.encode(schema.TOPIC_DECISION, d, 1))
    assert msg.header["label"] == "occupied" and msg.header["extra_field"] == "kept"
    newer = dict(d, v=2, something_new=[1, 2])
    assert schema.decode([b"decision", json.dumps(newer).encode()]).header["something_new"] == [1, 2]


@pytest.mark.parametrize("frames", [
    [b"decision"], [b"nonsense", b"{}"], [b"status", b"{not json"], [b"status", b"[1]"],
    [b"spectrum", b'{"v": 1, "fft_size": 4}', b"\0" * 12], [b"spectrum", b'{"v": 1}', b"\0" * 5],
    [b"decision", b'{"v": 1, "task": "occupancy"}']])
def test_decode_rejects_malformed(frames):
    with pytest.raises(schema.SchemaError):
        schema.decode(frames)
