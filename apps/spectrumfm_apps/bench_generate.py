"""`spectrumfm benchmark --generator FAMILY`: how fast the data generator makes examples.

    spectrumfm benchmark --generator modulation --length 1024 --seconds 1 --json

Times :func:`spectrumfm.synth.dataset.make_example` (waveform, channel, noise, receiver),
what each worker of ``spectrumfm generate`` runs per example, in this one process on one
core, for every class of the family in turn, with a typical impairment set (``--impairments
none`` turns them off). Writing the HDF5 shards is not included: it runs at disk speed.
"""

from __future__ import annotations

import json
import time

from spectrumfm.errors import InputError

def typical_impairments(samp_rate: float) -> dict:
    """A RadioML-2018-like channel, scaled to the rate: carrier offset up to 0.5 % of the
    rate, sample-clock offset, a little phase noise, TDL-A multipath at up to 60 km/h."""
    return {"cfo_hz": [-0.005 * samp_rate, 0.005 * samp_rate], "sro_ppm": [-20, 20],
            "phase_noise": [0, 0.0001 * samp_rate], "multipath": "tdl-a",
            "delay_spread_ns": [10, 100], "speed_kmh": [0, 60], "carrier_hz": 2.4e9}


def run(args) -> int:
    from spectrumfm.synth.dataset import make_example
    from spectrumfm.synth.impairments import Impairments
    from spectrumfm.synth.recipe import DEFAULT_RATES, Recipe

    if args.seconds <= 0 or args.length < 1:
        raise InputError("--seconds must be > 0 and --length >= 1")
    rate = args.samp_rate or DEFAULT_RATES.get(args.generator, 1e6)
    imp = typical_impairments(rate) if args.impairments == "typical" else {}
    recipe = Recipe.build({"family": args.generator, "samp_rate": rate, "length": args.length,
                           "n_per_class": 1, "snr_range": [-10, 20], "impairments": imp},
                          where="benchmark")
    impairments = Impairments.from_dict(imp)
    per_class = {}
    for c, name in enumerate(recipe.classes):
        make_example(recipe, impairments, c, 0)          # warm caches (taps, plans)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            make_example(recipe, impairments, c, n)
            n += 1
        dt = time.perf_counter() - t0
        per_class[name] = round(n / dt, 1)
    # A dataset has as many examples of each class: its rate is the harmonic mean.
    overall = len(per_class) / sum(1.0 / r for r in per_class.values())
    width = max(map(len, per_class))
    for name, r in per_class.items():
        print(f"  {name:<{width}} {r:10,.1f} examples/s")
    print(f"{args.generator}: {overall:,.1f} examples/s of {args.length} samples at "
          f"{rate / 1e6:g} MS/s on one core ({args.impairments} impairments; equal numbers of "
          f"each class, each timed {args.seconds:g} s)")
    if args.json:
        print(json.dumps({"generator": args.generator, "length": args.length, "samp_rate": rate,
                          "impairments": args.impairments, "examples_per_s": round(overall, 1),
                          "per_class": per_class}))
    return 0
