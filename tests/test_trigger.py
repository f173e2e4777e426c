"""Capture triggers (spectrumfm.trigger) and radio arithmetic (spectrumfm.radio)."""

import pytest

from spectrumfm import radio
from spectrumfm.trigger import Trigger


def decision(**kw):
    base = {"v": 1, "task": "occupancy", "label": "occupied", "score": 0.9, "sample_start": 0,
            "sample_count": 100, "time": 0.0, "freq_lo": 99e6, "freq_hi": 100e6,
            "center_freq": 100e6, "samp_rate": 2.4e6, "model": "energy-detector"}
    return {**base, **kw}


@pytest.mark.parametrize("expr, fields, want", [
    ("task=occupancy,score>0.8", {}, True),
    ("task=occupancy,score>0.8", {"score": 0.8}, False),
    ("label=LTE", {"task": "technology", "label": "lte"}, True),           # case ignored
    ("label=LTE", {}, False),
    ("technology=lte,anomaly>0.8", {"task": "technology", "label": "LTE"}, True),
    ("technology=lte,anomaly>0.8", {"task": "anomaly", "label": "anomalous", "score": 0.85}, True),
    ("technology=lte,anomaly>0.8", {"task": "anomaly", "score": 0.5}, False),
    ("technology=lte,anomaly>0.8", {}, False),
    ("emission>=0.9,snr_db>10", {"task": "emission", "score": 0.95, "snr_db": 12.0}, True),
    ("emission>=0.9,snr_db>10", {"task": "emission", "score": 0.95}, False),  # no snr_db
    ("freq_lo>=99e6,freq_hi<=100e6", {}, True),
    ("task!=occupancy", {}, False),
    ("label=LTE;score>0.85", {}, True),                                      # ';' is or
])
def test_matches(expr, fields, want):
    assert Trigger(expr).matches(decision(**fields)) is want


@pytest.mark.parametrize("expr, words", [
    ("", "empty"),
    ("score>>1", "is a number"),
    ("loudness>3", "unknown name 'loudness'"),
    ("label>LTE", "label is text"),
    ("technology>LTE", "compare a task"),
    ("task=occupancy,,score>0.5", "empty term"),
    ("score", "NAME OP VALUE"),
])
def test_bad_expressions_say_what_is_wrong(expr, words):
    with pytest.raises(ValueError, match=words):
        Trigger(expr)


def test_scan_centers_cover_the_range_in_usable_steps():
    centers = radio.scan_centers(88e6, 108e6, 2.4e6)
    step = 0.8 * 2.4e6
    assert len(centers) == 11
    assert centers[0] - step / 2 <= 88e6 and centers[-1] + step / 2 >= 108e6
    assert all(abs(b - a - step) < 1e-3 for a, b in zip(centers, centers[1:]))
    assert radio.scan_centers(100e6, 100.1e6, 2.4e6) == [100.05e6]
    assert radio.parse_scan("88M:108M") == (88e6, 108e6)
    with pytest.raises(ValueError, match="STOP must be above START"):
        radio.parse_scan("108e6:88e6")


def test_clamping_and_protocol():
    assert radio.clamp_to_ranges(500e3, radio.RTLSDR_RATES) == 300e3
    assert radio.clamp_to_ranges(800e3, radio.RTLSDR_RATES) == 900001
    assert radio.clamp_to_ranges(2.4e6, radio.RTLSDR_RATES) == 2.4e6
    assert radio.nearest_step(20, radio.TUNERS[5].gains_db) == 19.7
    assert radio.parse_host_port("pi.local:1234") == ("pi.local", 1234)
    assert radio.parse_host_port("rtl_tcp=10.0.0.2") == ("10.0.0.2", 1234)
    with pytest.raises(ValueError, match="HOST:PORT"):
        radio.parse_host_port("host:99999")
    assert radio.command(radio.CMD_PPM, -3) == b"\x05\xff\xff\xff\xfd"
    assert radio.parse_header(b"RTL0\x00\x00\x00\x05\x00\x00\x00\x1d") == (5, 29)
    with pytest.raises(ValueError, match="not an rtl_tcp server"):
        radio.parse_header(b"HTTP/1.1 200")
