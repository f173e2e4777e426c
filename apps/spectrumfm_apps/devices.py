"""`spectrumfm devices`: the radios SoapySDR can open here, and how to reach an rtl_tcp server."""

from __future__ import annotations

import json

RTL_TCP_HELP = """\
An RTL-SDR on another machine (a Raspberry Pi, say) is reached through rtl_tcp:
  there:  rtl_tcp -a 0.0.0.0 -p 1234        (rtl_tcp has no authentication: trusted networks only)
  here:   spectrumfm run --source rtl_tcp --args HOST:1234 -f 100e6 -s 2.4e6
A server that is not listening is reported at once; one that goes away mid-stream ends the run
(exit status 3) unless --reconnect is given."""


def add_parser(sub):
    p = sub.add_parser("devices", help="list radios SoapySDR can open",
                       description="List the radios SoapySDR finds (driver, label, serial, "
                                   "sample rate and gain ranges), and explain rtl_tcp.")
    p.add_argument("--args", default="", help="only devices matching this device string")
    p.add_argument("--json", action="store_true", help="one JSON object on standard output")
    p.set_defaults(func=main)
    return p


def _ranges(rs):
    return [[r.minimum(), r.maximum()] for r in rs]


def describe(SoapySDR, kwargs):
    """What a device says about itself; {"error": ...} when it cannot be opened (busy)."""
    info = {k: kwargs[k] for k in ("driver", "label", "serial") if k in kwargs}
    info["args"] = SoapySDR.KwargsToString(kwargs)
    try:
        dev = SoapySDR.Device(kwargs)
    except RuntimeError as exc:
        return {**info, "error": str(exc)}
    rx = SoapySDR.SOAPY_SDR_RX
    gain = dev.getGainRange(rx, 0)
    info.update(rates=_ranges(dev.getSampleRateRange(rx, 0)),
                gain=[gain.minimum(), gain.maximum()], auto_gain=bool(dev.hasGainMode(rx, 0)),
                freq=_ranges(dev.getFrequencyRange(rx, 0)),
                antennas=list(dev.listAntennas(rx, 0)))
    SoapySDR.Device.unmake(dev)
    return info


def _print(info):
    from spectrumfm.radio import describe_ranges

    print(f"{info.get('label', info['args'])}\n  --args \"{info['args']}\"")
    if "error" in info:
        print(f"  cannot open it now: {info['error']}")
        return
    print(f"  sample rates {describe_ranges(info['rates'], 'S/s')}; "
          f"gain {info['gain'][0]:g}-{info['gain'][1]:g} dB"
          f"{' (or auto)' if info['auto_gain'] else ''}")
    print(f"  frequencies {describe_ranges(info['freq'], 'Hz')}; "
          f"antennas {', '.join(info['antennas']) or '-'}")


def main(args) -> int:
    from .radio import quiet_soapy, soapy_drivers

    SoapySDR = quiet_soapy(args.verbose)
    found = [describe(SoapySDR, dict(k)) for k in SoapySDR.Device.enumerate(args.args)]
    drivers = soapy_drivers(SoapySDR)
    if args.json:
        print(json.dumps({"soapy_drivers": drivers, "devices": found}))
        return 0
    print(f"SoapySDR {SoapySDR.getLibVersion()}, drivers: {', '.join(drivers) or 'none'}")
    if not found:
        print("no radios found")
    for info in found:
        _print(info)
    print()
    print(RTL_TCP_HELP)
    return 0
