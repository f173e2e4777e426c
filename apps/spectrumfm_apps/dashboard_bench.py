"""`spectrumfm dashboard --benchmark S`: synthetic rows and decisions fed to the window as
fast as it draws them, for S seconds; prints frames per second."""

from __future__ import annotations

import json
import time

import numpy as np

from spectrumfm import schema

RATE, FREQ = 2.4e6, 100e6


def synthetic(bins: int, n: int, rng) -> tuple:
    """Row ``n`` (noise at -100 dB, a carrier, a burst every 50 rows) and its decision."""
    row = (-100 + 3 * rng.standard_normal(bins)).astype(np.float32)
    row[bins // 4] = -40
    spr = bins * 8
    header = {"v": 1, "type": "spectrum", "seq": n, "center_freq": FREQ, "samp_rate": RATE,
              "fft_size": bins, "sample_index": n * spr, "samples_per_row": spr,
              "time": n * spr / RATE}
    msgs = [schema.Message("spectrum", header, row)]
    if n % 5 == 0:
        lo = FREQ - RATE / 2 + (n * 37 % 100) / 100 * RATE * 0.9
        d = schema.make_decision(task="emission", label=("LTE", "WiFi", "emission")[n % 3],
                                 score=0.9, sample_start=n * spr, sample_count=5 * spr,
                                 samp_rate=RATE, center_freq=FREQ, freq_lo=lo,
                                 freq_hi=lo + RATE / 20, model="benchmark")
        msgs.append(schema.Message("decision", {**d, "type": "decision", "seq": n}))
    if n % 10 == 0:                     # an anomaly score for the timeline, now and then high
        a = schema.make_decision(task="anomaly", label="anomaly", score=float(rng.random()),
                                 sample_start=n * spr, sample_count=10 * spr, samp_rate=RATE,
                                 center_freq=FREQ, freq_lo=FREQ - RATE / 2,
                                 freq_hi=FREQ + RATE / 2, model="benchmark")
        msgs.append(schema.Message("decision", {**a, "type": "decision", "seq": n + 1}))
    return msgs


def benchmark(app, win, args) -> int:
    rng = np.random.default_rng(0)
    win.show()
    app.processEvents()
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < args.benchmark:
        win.tick(synthetic(args.bins, n, rng))
        app.processEvents()
        n += 1
    wall = time.monotonic() - t0
    result = {"fps": round(win.frames / wall, 1), "frames": win.frames, "bins": args.bins,
              "seconds": round(wall, 2), "boxes_drawn": win.waterfall.boxes_drawn,
              "anomalies": len(win.anomaly.scores), "alarms": win.anomaly.alarms}
    if not args.json:
        print(f"{result['fps']} frames/s at {args.bins} bins with decisions drawn")
    print(json.dumps(result))
    return 0
