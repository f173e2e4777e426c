"""`spectrumfm demo`: replay the shipped recording through the whole path and say what it found.

The recording (``data/demo/demo.sigmf-*``, a scene of the data generator made by
``spectrumfm generate --scene data/demo/demo-scene.yaml --datatype ci8 --out data/demo/demo``)
carries each emitter's true extent as a SigMF annotation, so the demo can report, emitter by
emitter, whether the run found it, and how many of its boxes match nothing. Boxes are the
energy detector's emissions, or with a model the boxes it classified (technology, else
modulation), or for a model with only occupancy its occupied channel-slot cells.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from spectrumfm.errors import InputError


def add_parser(sub):
    p = sub.add_parser("demo", help="replay the shipped demo recording and summarise it",
                       description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo", help="folder for the outputs (default %(default)s)")
    p.add_argument("--realtime", action="store_true", help="replay at real time (default: --fast)")
    p.add_argument("--recording", help="another SigMF recording with truth annotations")
    p.add_argument("--model", help="as for `spectrumfm run` (default: the shipped model, or "
                                   "the energy detector when none is installed)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.set_defaults(func=main)
    return p


def demo_recording() -> Path:
    from ._paths import DATA_DIR

    return Path(DATA_DIR) / "data" / "demo" / "demo.sigmf-meta"


def _overlap(a_lo, a_hi, b_lo, b_hi):
    return max(0.0, min(a_hi, b_hi) - max(a_lo, b_lo))


def match_truth(truth, boxes):
    """For each truth annotation, the boxes that overlap it in both time and frequency."""
    rows, used = [], set()
    for t in truth:
        t0, t1 = t["core:sample_start"], t["core:sample_start"] + t["core:sample_count"]
        hits = [i for i, b in enumerate(boxes)
                if _overlap(t0, t1, b["sample_start"], b["sample_start"] + b["sample_count"]) > 0
                and _overlap(t["core:freq_lower_edge"], t["core:freq_upper_edge"],
                             b["freq_lo"], b["freq_hi"]) > 0]
        used.update(hits)
        covered = sum(min(t1, boxes[i]["sample_start"] + boxes[i]["sample_count"])
                      - max(t0, boxes[i]["sample_start"]) for i in hits)
        rows.append((t, len(hits), min(1.0, covered / max(1, t1 - t0))))
    unmatched = [b for i, b in enumerate(boxes) if i not in used]
    return rows, unmatched


def main(args) -> int:
    from . import run as run_cmd
    from .cli import build_parser

    meta = Path(args.recording) if args.recording else demo_recording()
    if not meta.exists():
        raise InputError(f"{meta}: demo recording not found (run `make install`)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    argv = ["run", str(meta), "--headless", "--decisions", str(out / "decisions.jsonl"),
            "--record", str(out / "demo-annotated.sigmf-meta"), "--stats", str(out / "stats.json")]
    if not args.realtime:
        argv.append("--fast")
    if args.model:
        argv += ["--model", args.model]
    argv += ["--device", args.device]
    run_args = build_parser().parse_args(argv)
    run_cmd.main(run_args)

    meta_json = json.loads(meta.read_text())
    truth = meta_json.get("annotations", [])
    rate = float(meta_json["global"]["core:sample_rate"])
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    tasks = {d["task"] for d in decisions}
    # One kind of box only: a model's technology and modulation decisions share their boxes.
    box_task = next((t for t in ("emission", "technology", "modulation", "occupancy")
                     if t in tasks), "emission")
    boxes = [d for d in decisions if d["task"] == box_task and d["label"] != "vacant"]
    what = "occupied cells" if box_task == "occupancy" else "boxes"
    rows, unmatched = match_truth(truth, boxes)
    print(f"\nAgainst the recording's truth ({len(truth)} emitters):")
    found = 0
    for t, n, cover in rows:
        found += n > 0
        print(f"  {'found ' if n else 'MISSED'}  {t['core:label']:<8} "
              f"{t['core:freq_lower_edge'] / 1e6:.4f}-{t['core:freq_upper_edge'] / 1e6:.4f} MHz "
              f"from {t['core:sample_start'] / rate:.3f} s: {n} {what}, "
              f"{100 * cover:.0f} % of its time covered")
    print(f"{found}/{len(truth)} emitters found; {len(unmatched)} of {len(boxes)} {what} match "
          f"no emitter (false alarms or unlabelled spill-over)")
    print(f"outputs in {out}{os.sep}")
    return 0
