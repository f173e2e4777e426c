"""The SoapySDR path without a radio: errors naming the device string and the drivers there
are, `spectrumfm devices`, and the clamping of settings to what a device reports. Tests with
a real radio are marked `hardware` and skip when none is attached."""

import functools
import json
from types import SimpleNamespace

import pytest

from sfm_testutil import read_jsonl, run_cli
from spectrumfm.errors import InputError
from spectrumfm.schema import validate_decision


@functools.lru_cache(maxsize=1)
def soapy_devices():
    import os

    os.environ.setdefault("UHD_LOG_CONSOLE_LEVEL", "warning")
    import SoapySDR

    SoapySDR.setLogLevel(SoapySDR.SOAPY_SDR_WARNING)
    return tuple(dict(d) for d in SoapySDR.Device.enumerate())


def one_error(res, code):
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, res.stderr
    return errors[0]


def test_unknown_driver_names_the_string_and_lists_drivers(tmp_path):
    res = run_cli("run", "--source", "soapy", "--args", "driver=hackrfx", cwd=tmp_path)
    line = one_error(res, 2)
    assert line.startswith("spectrumfm: error: --args 'driver=hackrfx': SoapySDR has no driver "
                           "'hackrfx'; drivers available: ")
    assert "rtlsdr" in line and "uhd" in line          # the modules `make install` installs


@pytest.mark.skipif(bool(soapy_devices()), reason="a radio is attached")
def test_known_driver_without_a_radio(tmp_path):
    res = run_cli("run", "--source", "soapy", "--args", "driver=rtlsdr", cwd=tmp_path)
    line = one_error(res, 2)
    assert "--args 'driver=rtlsdr': no radio matches" in line and "spectrumfm devices" in line


@pytest.mark.skipif(bool(soapy_devices()), reason="a radio is attached")
def test_devices_says_no_radios_found(tmp_path):
    res = run_cli("devices", cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "no radios found" in res.stdout
    assert "rtl_tcp -a 0.0.0.0 -p 1234" in res.stdout and "--source rtl_tcp" in res.stdout
    assert res.stderr == ""                              # no UHD or SoapySDR chatter
    out = json.loads(run_cli("devices", "--json", cwd=tmp_path, timeout=60).stdout)
    assert out["devices"] == [] and {"rtlsdr", "uhd"} <= set(out["soapy_drivers"])


def test_live_only_options_need_a_live_source(tmp_path):
    line = one_error(run_cli("run", tmp_path / "x.cf32", "--scan", "88e6:108e6", cwd=tmp_path), 2)
    assert "--scan needs a live radio" in line


class Range:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def minimum(self):
        return self.lo

    def maximum(self):
        return self.hi


class FakeSoapySource:
    """The parts of gnuradio.soapy.source that configure_soapy uses, for an RTL-SDR."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name.startswith("set_"):
            return lambda chan, *value: self.calls.append((name, *value))
        raise AttributeError(name)

    def get_sample_rate_range(self, chan):
        return [Range(225001, 300000), Range(900001, 3.2e6)]

    def get_frequency_range(self, chan):
        return [Range(24e6, 1766e6)]

    def get_gain_range(self, chan):
        return Range(0, 49.6)

    def get_bandwidth_range(self, chan):
        return [Range(0, 3.2e6)]

    def list_antennas(self, chan):
        return ["RX"]

    def has_gain_mode(self, chan):
        return True

    def has_frequency_correction(self, chan):
        return True


def settings(**kw):
    base = dict(samp_rate=2.4e6, freq=100e6, gain="auto", antenna=None, bandwidth=None, ppm=0)
    return SimpleNamespace(**{**base, **kw})


def test_settings_are_clamped_to_what_the_device_reports(caplog):
    from spectrumfm_apps.radio import configure_soapy

    src = FakeSoapySource()
    configure_soapy(src, settings(samp_rate=500e3, freq=3e9, gain="60", ppm=12), "driver=rtlsdr")
    assert ("set_sample_rate", 300000.0) in src.calls
    assert ("set_frequency", 1766e6) in src.calls
    assert ("set_gain_mode", False) in src.calls and ("set_gain", 49.6) in src.calls
    assert ("set_frequency_correction", 12.0) in src.calls
    assert "sample rate 500000 S/s is outside what the radio takes (225001-300000 or " \
           "900001-3.2e+06 S/s); using 300000" in caplog.text
    src = FakeSoapySource()
    configure_soapy(src, settings(), "driver=rtlsdr")
    assert src.calls == [("set_sample_rate", 2.4e6), ("set_frequency", 100e6),
                         ("set_gain_mode", True)]
    with pytest.raises(InputError, match="--antenna TX/RX: driver=rtlsdr has antennas RX"):
        configure_soapy(FakeSoapySource(), settings(antenna="TX/RX"), "driver=rtlsdr")


@pytest.mark.hardware
@pytest.mark.parametrize("driver", ["rtlsdr", "uhd"])
def test_real_radio_gives_decisions(tmp_path, driver):
    found = [d for d in soapy_devices() if d.get("driver") == driver]
    if not found:
        pytest.skip(f"no {driver} radio attached")
    rate = 2.4e6 if driver == "rtlsdr" else 2e6
    out = tmp_path / "d.jsonl"
    res = run_cli("run", "--source", "soapy", "--args", f"driver={driver}", "-f", 100e6,
                  "-s", rate, "--duration", 2, "--decisions", out, "-q", "--model", "energy-detector",
                  cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    decisions = read_jsonl(out)
    assert decisions
    for d in decisions:
        validate_decision(d)
        assert d["center_freq"] == pytest.approx(100e6, abs=1e3) and d["samp_rate"] == rate
