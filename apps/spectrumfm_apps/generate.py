"""`spectrumfm generate`: labelled datasets (HDF5 shards) and wideband scenes (SigMF).

    spectrumfm generate --family modulation --n-per-class 1000 --snr-range -10,20 --out data/mod
    spectrumfm generate --family technology --classes wifi,lte,nr,ble --samp-rate 20e6 \
        --length 1024 --n-per-class 500 --seed 1 --workers 2 --out data/tech
    spectrumfm generate --recipe recipes/technology.yaml --out data/tech
    spectrumfm generate --scene random --emitters 6 --samp-rate 20e6 --freq 2.44e9 \
        --duration 0.2 --out out/scene            # out/scene.sigmf-meta + .sigmf-data
    spectrumfm generate --scene scene.yaml --out out/scene
    spectrumfm generate --list                    # the ids of every family

Options given on the command line override a recipe's settings.
"""

from __future__ import annotations

import json
import logging
import os

from spectrumfm.errors import InputError

log = logging.getLogger("spectrumfm")
CHANNEL_FAMILIES = ("occupancy", "channel-anomaly")
DESCRIPTION = "Generate labelled datasets (HDF5 shards) or wideband scenes (SigMF)."


def add_parser(sub):
    from spectrumfm.synth.recipe import GENERATE_FAMILIES

    p = sub.add_parser("generate", help="generate labelled datasets or wideband scenes",
                       description=DESCRIPTION)
    p.add_argument("--family", help=f"what to generate: {', '.join(GENERATE_FAMILIES)}; or "
                                    f"{' or '.join(CHANNEL_FAMILIES)}: channel windows of "
                                    "random scenes, cut as the engine cuts them, for the "
                                    "occupancy and anomaly adapters")
    p.add_argument("--scenes", type=int, default=600,
                   help="occupancy / channel-anomaly: random scenes to cut (default 600)")
    p.add_argument("--channels", type=int, default=16,
                   help="occupancy / channel-anomaly: channels per scene (default 16)")
    p.add_argument("--oversample", type=int, default=1,
                   help="occupancy / channel-anomaly: each window sees its channel alone (1, "
                        "default, as the shipped adapters) or with half of each neighbour (2)")
    p.add_argument("--classes", help="comma-separated class ids (default: all of the family)")
    p.add_argument("--n-per-class", type=int, help="examples per class (default 1000)")
    p.add_argument("-s", "--samp-rate", type=float,
                   help="sample rate in Hz (default: 1e6 modulation, 20e6 technology/sensing, "
                        "25e6 anomaly)")
    p.add_argument("--length", type=int, help="samples per example (default 1024)")
    snr = p.add_mutually_exclusive_group()
    snr.add_argument("--snr-db", type=float, help="one in-band SNR for every example (dB)")
    snr.add_argument("--snr-range", metavar="LO,HI",
                     help="in-band SNR drawn uniformly per example (default -10,20)")
    p.add_argument("--seed", type=int, help="random seed (default 0): same seed, same bytes")
    p.add_argument("--shard-size", type=int, help="examples per shard (default 4096)")
    p.add_argument("--recipe", metavar="FILE.yaml",
                   help="a versioned recipe with these settings and impairments")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel worker processes (default: one per core)")
    p.add_argument("--out", help="output folder (datasets) or path without extension (scenes)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the dataset in a non-empty output folder")
    p.add_argument("--scene", metavar="random|FILE.yaml",
                   help="write a wideband scene as SigMF instead of a dataset")
    p.add_argument("--emitters", type=int, default=5, help="emitters in a random scene")
    p.add_argument("-f", "--freq", type=float, default=2.44e9,
                   help="centre frequency of a random scene (Hz)")
    p.add_argument("--duration", type=float, default=0.1,
                   help="length of a random scene (s)")
    p.add_argument("--datatype", default="cf32_le",
                   help="sample format of a scene: cf32_le, ci16_le, ci8 or cu8 (default "
                        "cf32_le)")
    p.add_argument("--list", action="store_true", help="list the ids of every family and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def _settings(args) -> dict:
    from spectrumfm.synth.recipe import Recipe

    s = Recipe.load(args.recipe) if args.recipe else {}
    for key in ("family", "classes", "n_per_class", "samp_rate", "length", "seed",
                "shard_size"):
        value = getattr(args, key)
        if value is not None:
            s[key] = value
    if args.snr_db is not None:
        s["snr_db"], s["snr_range"] = args.snr_db, None
    elif args.snr_range is not None:
        s["snr_range"], s["snr_db"] = args.snr_range, None
    if not s.get("family"):
        raise InputError("generate: no --family (modulation, technology, sensing or anomaly) "
                         "and no --recipe")
    return s


def list_ids() -> None:
    from spectrumfm.synth import core
    from spectrumfm.synth.anomalies import ANOMALY_CLASSES

    for family in core.FAMILIES:
        print(f"{family}:")
        for name in core.names(family):
            print(f"  {name:<10} {core.get(family, name).description}")
    print("sensing:\n  noise      receiver noise only; with any technology or modulation id")
    print("anomaly:\n  " + " ".join(ANOMALY_CLASSES))


def _scene(args) -> int:
    import numpy as np

    from spectrumfm.synth import scenes
    from spectrumfm.synth.core import get, names

    if args.scene == "random":
        rate = args.samp_rate or 20e6
        pool = [n for n in names("technology")
                if n != "noise" and get("technology", n).min_rate <= 0.8 * rate]
        scene = scenes.random_scene(np.random.default_rng(args.seed or 0), rate, args.freq,
                                    args.duration, pool, args.emitters, seed=args.seed or 0)
    else:
        scene = scenes.load_scene(args.scene)
    meta, data = scenes.write_sigmf(scene, args.out, datatype=args.datatype)
    n = len(json.load(open(meta, encoding="utf-8"))["annotations"])
    print(f"wrote {meta} and {os.path.basename(data)}: {scene.n_samples} samples at "
          f"{scene.samp_rate / 1e6:g} MS/s, {len(scene.emitters)} emitters, {n} annotations")
    return 0


def _channel_windows(args) -> int:
    from spectrumfm.synth import occupancy

    if args.scenes < 1 or args.channels < 1:
        raise InputError(f"--scenes and --channels must be at least 1, got {args.scenes}, "
                         f"{args.channels}")
    if args.oversample < 1 or args.channels % args.oversample:
        raise InputError(f"--oversample must be at least 1 and divide --channels "
                         f"({args.channels}), got {args.oversample}")
    kw = dict(n_scenes=args.scenes, seed=args.seed or 0, n_channels=args.channels,
              oversample=args.oversample, overwrite=args.overwrite, progress=not args.quiet)
    if args.family == "occupancy":
        info = occupancy.generate_occupancy(args.out, **kw)
    else:
        info = occupancy.generate_anomaly_windows(args.out, **kw)
    print(f"wrote {info['n_examples']} channel windows ({', '.join(info['classes'])}) of "
          f"{args.scenes} scenes in {len(info['shards'])} shard(s) to {args.out}")
    return 0


def main(args) -> int:
    from spectrumfm.synth.dataset import generate
    from spectrumfm.synth.recipe import Recipe

    if args.list:
        list_ids()
        return 0
    if not args.out:
        raise InputError("generate: no --out (the path without extension to write the scene "
                         "to)" if args.scene else "generate: no --out (the folder to write "
                         "the dataset to)")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.scene:
        return _scene(args)
    if args.family in CHANNEL_FAMILIES:
        return _channel_windows(args)
    where = args.recipe or "generate"
    recipe = Recipe.build(_settings(args), where=where)
    info = generate(recipe, args.out, workers=args.workers, overwrite=args.overwrite,
                    progress=not args.quiet)
    print(f"wrote {info['n_examples']} examples ({len(recipe.classes)} classes x "
          f"{recipe.n_per_class}) of {recipe.length} samples at {recipe.samp_rate / 1e6:g} MS/s "
          f"in {len(info['shards'])} shard(s) to {args.out}")
    return 0
