"""What a run found, for people: a message sink that tallies decisions, and the printout."""

from __future__ import annotations

from collections import Counter, defaultdict

import pmt
from gnuradio import gr
from gnuradio.spectrumfm.pmtutil import pmt_to_dict

# Emission boxes kept for the printout and the demo's comparison with the truth; a run
# that finds more only counts the rest (memory stays bounded on long runs).
MAX_KEPT = 5000
# Tasks whose decisions are boxes around one emission (the energy detector's, and the
# models' classifications of them).
BOX_TASKS = ("emission", "technology", "modulation")


class decision_collector(gr.basic_block):
    """Message-only sink: counts decisions by task and label, keeps emission boxes
    (``emissions``: the energy detector's; ``classified``: technology/modulation)."""

    def __init__(self):
        gr.basic_block.__init__(self, "spectrumfm_decision_collector", None, None)
        self.total = 0
        self.by_label = Counter()
        self.emissions = []
        self.classified = []
        # (freq_lo, freq_hi) -> [occupied slots, all slots]
        self.channels = defaultdict(lambda: [0, 0])
        self.message_port_register_in(pmt.intern("decisions"))
        self.set_msg_handler(pmt.intern("decisions"), self._handle)

    def _handle(self, msg):
        d = pmt_to_dict(msg)
        if d is None or "task" not in d:
            return
        self.total += 1
        self.by_label[(d["task"], d.get("label"))] += 1
        if d["task"] == "emission" and len(self.emissions) < MAX_KEPT:
            self.emissions.append(d)
        elif d["task"] in BOX_TASKS and len(self.classified) < MAX_KEPT:
            self.classified.append(d)
        elif d["task"] == "occupancy":
            cell = self.channels[(d["freq_lo"], d["freq_hi"])]
            cell[0] += d.get("label") == "occupied"
            cell[1] += 1


def _mhz(hz):
    return f"{hz / 1e6:.4f}"


def print_summary(args, parts, stats, out=None):
    import sys

    out = out or sys.stdout
    src, col = parts["source"], parts["collector"]
    rate = src.samp_rate
    seconds = stats["samples_in"] / rate if rate else 0.0
    print(f"\n{args.path or src.label}: {stats['samples_in']:,} samples = {seconds:.2f} s at "
          f"{rate / 1e6:g} MS/s, centre {src.center_freq / 1e6:.4f} MHz "
          f"(analysed in {stats['wall_s']:.2f} s wall clock)", file=out)
    model = stats.get("model", "energy-detector")
    unit = "slots" if model == "energy-detector" else "windows"
    analysed, dropped = stats.get("windows_analyzed", 0), stats.get("windows_dropped", 0)
    share = 100.0 * analysed / max(1, analysed + dropped)
    print(f"{col.total:,} decisions by {model}"
          f"{' on ' + stats['device'] if stats.get('device') else ''}; {analysed:,} {unit} "
          f"analysed, {dropped:,} dropped ({share:.1f} % analysed); latency p50 "
          f"{1e3 * (stats.get('latency_p50_s') or 0):.1f} ms, p95 "
          f"{1e3 * (stats.get('latency_p95_s') or 0):.1f} ms", file=out)
    model_tasks = sorted({task for task, _ in col.by_label} - {"occupancy", "emission"})
    for task in model_tasks:
        labels = sorted(((n, label) for (t, label), n in col.by_label.items() if t == task),
                        reverse=True)
        print(f"{task}: " + ", ".join(f"{label} {n:,}" for n, label in labels[:8]), file=out)
    if "reconnects" in stats or stats.get("overflows"):
        print(f"radio: {stats.get('overflows', 0)} overflows ({stats.get('samples_dropped', 0):,} "
              f"samples known lost), {stats.get('reconnects', 0)} reconnects", file=out)
    if col.channels:
        print("\nOccupancy by channel (share of time slots occupied):", file=out)
        for (lo, hi), (occ, n) in sorted(col.channels.items()):
            bar = "#" * round(20 * occ / n) if n else ""
            print(f"  {_mhz(lo)}-{_mhz(hi)} MHz  {100 * occ / max(n, 1):5.1f} %  {bar}", file=out)
    _print_boxes(out, rate, col.emissions, "Emissions found",
                 "start s, duration ms, band MHz, SNR dB, score",
                 lambda d: f"{d.get('snr_db', float('nan')):5.1f}  {d['score']:.2f}")
    _print_boxes(out, rate, col.classified, "Emissions classified",
                 "start s, duration ms, band MHz, task: label score",
                 lambda d: f"{d['task']}: {d['label']} {d['score']:.2f}")
    for path, what in ((args.decisions, "decisions"), (args.record, "recording"),
                       (args.stats, "statistics")):
        if path:
            print(f"{what}: {path}", file=out)
    if "capture" in parts:
        print(f"captures: {len(parts['capture'].files)} snippets in {args.capture_dir}", file=out)


def _print_boxes(out, rate, boxes, title, columns, tail, limit=40):
    """The first ``limit`` boxes by start: time, duration, band, then ``tail(d)``."""
    if not boxes:
        return
    print(f"\n{title}: {len(boxes)} ({columns}):", file=out)
    shown = sorted(boxes, key=lambda d: d["sample_start"])[:limit]
    for d in shown:
        print(f"  {d['sample_start'] / rate:8.3f}  {1e3 * d['sample_count'] / rate:8.1f}  "
              f"{_mhz(d['freq_lo'])}-{_mhz(d['freq_hi'])}  {tail(d)}", file=out)
    if len(boxes) > len(shown):
        print(f"  ... and {len(boxes) - len(shown)} more", file=out)
