"""The dashboard's main window: lays out the plots, the decision table and the status bar,
and applies the messages the subscriber thread hands over (drained by a QTimer)."""

from __future__ import annotations

import collections
import csv
import time

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtWidgets

from spectrumfm import schema

from .dashboard_io import Counters, RowRing
from .dashboard_plots import (BOX_TASKS, COLORMAPS, AnomalyPlot, SpectrumPlot, WaterfallPlot,
                              label_colour)

TABLE_ROWS = 1000
PANORAMA_MAX_BINS = 8192   # a scan's wide row at most: coarser bins (max of k) beyond that
COLUMNS = ("time", "freq", "task", "label", "score")


def export_decisions(decisions: list, path: str) -> int:
    """Write decisions to ``path``: CSV when it ends in .csv, else JSONL. Returns the count."""
    with open(path, "w", newline="") as fh:
        if str(path).endswith(".csv"):
            fields = list(schema.DECISION_FIELDS)
            writer = csv.DictWriter(fh, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(decisions)
        else:
            for d in decisions:
                fh.write(schema.decision_to_json({k: v for k, v in d.items()
                                                  if not k.startswith("_")}) + "\n")
    return len(decisions)


def _clock(t: float) -> str:
    """Signal time: UTC clock time when it is one (``rx_time``), else seconds."""
    if t > 1e8:
        return time.strftime("%H:%M:%S", time.gmtime(t)) + f"{t % 1:.3f}"[1:]
    return f"{t:.3f} s"


class DecisionModel(QtCore.QAbstractTableModel):
    """The newest ``TABLE_ROWS`` decisions, newest first."""

    def __init__(self):
        super().__init__()
        self.rows = collections.deque(maxlen=TABLE_ROWS)

    def add(self, decisions: list):
        self.beginResetModel()
        self.rows.extendleft(decisions)
        self.endResetModel()

    def rowCount(self, parent=QtCore.QModelIndex()):
        return len(self.rows)

    def columnCount(self, parent=QtCore.QModelIndex()):
        return len(COLUMNS)

    def headerData(self, section, orientation, role=QtCore.Qt.DisplayRole):
        if role == QtCore.Qt.DisplayRole and orientation == QtCore.Qt.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index, role=QtCore.Qt.DisplayRole):
        if role != QtCore.Qt.DisplayRole:
            return None
        d = self.rows[index.row()]
        col = COLUMNS[index.column()]
        if col == "time":
            return _clock(d["time"])
        if col == "freq":
            return pg.siFormat((d["freq_lo"] + d["freq_hi"]) / 2, suffix="Hz", precision=7)
        if col == "score":
            return f"{d['score']:.2f}"
        return d[col]


class MainWindow(QtWidgets.QMainWindow):
    """Wires the data (``ingest``) to the plots; ``tick`` is called by the drain timer."""

    def __init__(self, source: str, history: int = 400, max_boxes: int = 40,
                 max_rows_per_tick: int = 64, counters: Counters | None = None,
                 anomaly_threshold: float = 0.5):
        super().__init__()
        self.setWindowTitle(f"spectrumfm dashboard - {source}")
        self.resize(1100, 800)
        self.source, self.history, self.max_rows = source, history, max_rows_per_tick
        self.max_boxes = max_boxes
        self.anomaly_threshold = anomaly_threshold
        self.counters = counters or Counters()
        self.layout_key = None          # (center_freq, samp_rate, fft_size), or for a scan
        self.ring = None                # ("scan", start, stop, native bin Hz)
        self.scan = None                # (scan_start, scan_stop) while the status says so
        self.pano = None                # (first bin Hz, bin Hz, pool k, wide row) of a scan
        self.resets = 0                 # layouts rebuilt (a restart, a retune, a new scan)
        self.last_seq, self.last_row, self.status = {}, None, {}
        self.occupied = {}              # (freq_lo, freq_hi) -> (occupied, when)
        self.paused = False
        self.frames = self.decisions_in = 0
        self._rates = collections.deque(maxlen=20)
        self._build()

    # ---- layout -------------------------------------------------------------------------
    def _build(self):
        self.spectrum = SpectrumPlot()
        self.waterfall = WaterfallPlot(max_boxes=self.max_boxes)
        self.waterfall.setXLink(self.spectrum)
        self.spectrum.on_cursor_x = self.waterfall.set_cursor_x
        self.anomaly = AnomalyPlot(self.anomaly_threshold)
        split = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        split.addWidget(self.spectrum)
        split.addWidget(self.waterfall)
        split.addWidget(self.anomaly)
        split.setSizes([230, 470, 120])
        plots = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(plots)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(split)
        row.addWidget(self.waterfall.colorbar_widget)
        side = QtWidgets.QWidget()
        col = QtWidgets.QVBoxLayout(side)
        self.filter = QtWidgets.QLineEdit(placeholderText="filter decisions (label, task)")
        self.model = DecisionModel()
        self.proxy = QtCore.QSortFilterProxyModel()
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(QtCore.Qt.CaseInsensitive)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.table.clicked.connect(self._on_table_click)
        self.legend = QtWidgets.QLabel("labels: none yet")
        self.legend.setWordWrap(True)
        self._legend_shown = 0
        col.addWidget(self._controls())
        col.addWidget(self.legend)
        col.addWidget(self.filter)
        col.addWidget(self.table)
        main = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        main.addWidget(plots)
        main.addWidget(side)
        main.setSizes([800, 300])
        self.setCentralWidget(main)
        self.status_label = QtWidgets.QLabel("waiting")
        self.statusBar().addWidget(self.status_label)
        self._menu()

    def _controls(self):
        box = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(box)
        self.cmap = QtWidgets.QComboBox()
        self.cmap.addItems(list(COLORMAPS))
        self.cmap.currentTextChanged.connect(self.waterfall.set_colormap)
        self.avg = QtWidgets.QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05,
                                            value=self.spectrum.alpha, prefix="avg ")
        self.avg.valueChanged.connect(lambda v: setattr(self.spectrum, "alpha", v))
        buttons = [("auto levels", self.auto_levels), ("reset holds", self.spectrum.reset_holds),
                   ("pause", self.toggle_pause)]
        self.history_box = QtWidgets.QSpinBox(minimum=2, maximum=100000, singleStep=50,
                                              value=self.history, prefix="history ",
                                              suffix=" rows", keyboardTracking=False)
        self.history_box.valueChanged.connect(self.set_history)
        lo, hi = self.waterfall.levels()
        self.level_lo = QtWidgets.QDoubleSpinBox(minimum=-300.0, maximum=100.0, singleStep=5.0,
                                                 value=lo, prefix="lo ", suffix=" dB",
                                                 decimals=1, keyboardTracking=False)
        self.level_hi = QtWidgets.QDoubleSpinBox(minimum=-300.0, maximum=100.0, singleStep=5.0,
                                                 value=hi, prefix="hi ", suffix=" dB",
                                                 decimals=1, keyboardTracking=False)
        self.level_lo.valueChanged.connect(self._on_level_box)
        self.level_hi.valueChanged.connect(self._on_level_box)
        self.waterfall.on_levels = self._sync_level_boxes
        grid.addWidget(self.cmap, 0, 0)
        grid.addWidget(self.avg, 0, 1)
        grid.addWidget(self.history_box, 1, 0, 1, 2)
        grid.addWidget(self.level_lo, 2, 0)
        grid.addWidget(self.level_hi, 2, 1)
        for i, (text, slot) in enumerate(buttons):
            button = QtWidgets.QPushButton(text)
            button.clicked.connect(slot)
            grid.addWidget(button, 3 + i // 2, i % 2)
            if text == "pause":
                self.pause_button = button
        return box

    def _menu(self):
        menu = self.menuBar().addMenu("&File")
        menu.addAction("Export decisions shown...", self._export_dialog)
        menu.addAction("Save screenshot...", self._screenshot_dialog)
        menu.addAction("Quit", self.close)

    # ---- actions --------------------------------------------------------------------------
    def auto_levels(self):
        """Levels from the newest rows: the 5th percentile to the maximum plus margin."""
        if self.ring is None or not self.ring.total:
            return
        rows = self.ring.newest(100)
        lo, hi = np.percentile(rows, 5), float(rows.max())
        self.waterfall.set_levels(lo - 3, hi + 3)

    def _on_level_box(self, *_):
        lo, hi = self.level_lo.value(), self.level_hi.value()
        if lo < hi:
            self.waterfall.set_levels(lo, hi)

    def _sync_level_boxes(self, lo: float, hi: float):
        """The colour bar's levels (dragged, auto or set) shown in the two spin boxes."""
        for box, value in ((self.level_lo, lo), (self.level_hi, hi)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)

    def set_history(self, rows: int):
        """Waterfall history of ``rows`` rows: a new ring keeping the newest rows (row
        numbers, and so the decision boxes, are unchanged)."""
        rows = int(rows)
        if rows == self.history or rows < 2:
            return
        self.history = rows
        if self.history_box.value() != rows:
            self.history_box.setValue(rows)
        if self.ring is None:
            return
        old = self.ring
        self.ring = RowRing(rows, old.bins, old.floor)
        for row in old.newest(rows):
            self.ring.push(row)
        self.ring.total = old.total
        self.waterfall.history = rows
        self.waterfall.show_rows(self.ring.view(), self.ring.total)

    def _show_legend(self):
        labels = self.waterfall.labels
        if len(labels) == self._legend_shown:
            return
        self._legend_shown = len(labels)
        self.legend.setText("labels: " + " ".join(
            f'<span style="color: rgb{label_colour(lb)}">&#9632; {lb}</span>' for lb in labels))

    def toggle_pause(self):
        self.paused = not self.paused
        self.pause_button.setText("resume" if self.paused else "pause")

    def shown_decisions(self) -> list:
        return [self.model.rows[self.proxy.mapToSource(self.proxy.index(r, 0)).row()]
                for r in range(self.proxy.rowCount())]

    def _export_dialog(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export decisions", "decisions.jsonl",
                                                        "JSONL (*.jsonl);;CSV (*.csv)")
        if path:
            export_decisions(self.shown_decisions(), path)

    def _screenshot_dialog(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Screenshot", "dashboard.png",
                                                        "PNG (*.png)")
        if path:
            self.grab().save(path)

    def _on_table_click(self, index):
        self.waterfall.select(self.model.rows[self.proxy.mapToSource(index).row()])

    # ---- data -----------------------------------------------------------------------------
    def safe_tick(self, messages: list):
        """``tick`` for the timer: a message that passes the schema but cannot be shown
        (a field of an unexpected type from a newer engine) is counted as malformed."""
        try:
            self.tick(messages)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.counters.malformed += 1

    def show_status(self):
        try:
            self.status_label.setText(self.status_text())
        except (KeyError, TypeError, ValueError):
            self.status_label.setText(f"{self.source}: status not readable")

    def tick(self, messages: list):
        """Apply drained messages: status and decisions all, spectrum rows up to
        ``max_rows_per_tick`` (the newest; older ones are dropped and counted), then draw
        once."""
        if self.paused:
            return
        rows = [m for m in messages if m.topic == "spectrum"]
        skipped = max(0, len(rows) - self.max_rows)   # behind: keep only the newest rows
        self.counters.dropped_render += skipped
        drop = set(map(id, rows[:skipped]))
        keep = len(rows) > 0
        decisions = []
        for m in messages:
            if id(m) in drop:
                continue
            try:
                self._apply(m, decisions)
            except (KeyError, TypeError, ValueError, AttributeError):
                self.counters.malformed += 1  # valid JSON, but not usable (a newer engine?)
        listed = [d for d in decisions if d["label"] != "vacant"]
        if listed:
            self.model.add(listed[::-1])
        if keep and self.ring is not None:
            self.waterfall.show_rows(self.ring.view(), self.ring.total)
            self.spectrum.update_row(self.last_row[1])
            self.frames += 1
        self._show_occupancy()
        self.anomaly.redraw()
        self._show_legend()

    def _apply(self, m, decisions: list):
        self._check_seq(m)
        if m.topic == "spectrum":
            self._on_row(m)
        elif m.topic == "decision":
            decisions.append(self._on_decision(m.header))
        elif m.topic in ("status", "eos"):
            self._on_status(m.header, m.topic)

    def _check_seq(self, m):
        seq = m.header.get("seq")
        if not isinstance(seq, int):
            return
        last = self.last_seq.get(m.topic)
        if last is not None and seq > last + 1:
            self.counters.lost_seq += seq - last - 1
        if last is not None and seq < last and m.topic == "spectrum":
            self.layout_key = None      # the publisher restarted: reset the view
        self.last_seq[m.topic] = seq

    def _on_row(self, m):
        h = m.header
        key = (float(h.get("center_freq", 0.0)), float(h.get("samp_rate", 1.0)), m.row.size)
        if self.scan and self.scan[0] <= key[0] <= self.scan[1]:
            self._on_scan_row(m, key)
            return
        if key != self.layout_key:
            self._reset(key, h)
        if not self.ring.total:
            self.first_sample = int(h.get("sample_index", 0))
        self.ring.push(m.row)
        self.last_row = (h, m.row)

    def _on_scan_row(self, m, key):
        """A row of a scan step: written into its own segment of the wide row (the other
        segments keep their last values, or the floor if never seen), pushed as one new
        waterfall row; a retune within the range rebuilds nothing."""
        h, (freq, rate, bins) = m.header, key
        pano_key = ("scan", *self.scan, rate / bins)
        if pano_key != self.layout_key:
            self._reset_scan(pano_key, h, bins)
        f_first, bin_hz, k, wide = self.pano
        row = m.row if k == 1 else m.row[:bins // k * k].reshape(-1, k).max(axis=1)
        lo = int(round((freq - bins // 2 * rate / bins - f_first) / bin_hz))
        a, b = max(lo, 0), min(lo + row.size, wide.size)
        if a < b:
            wide[a:b] = row[a - lo:b - lo]
        if not self.ring.total:
            self.first_sample = int(h.get("sample_index", 0))
        self.ring.push(wide)
        self.last_row = (h, self.ring.newest(1)[0])   # a ring slot, not the wide row

    def _reset(self, key, h):
        freq, rate, bins = key
        self.layout_key = key
        self.ring = RowRing(self.history, bins)
        self.row_samples = int(h.get("samples_per_row") or bins)
        f0 = freq - rate / 2 - rate / bins / 2
        freqs = freq + (np.arange(bins) - bins // 2) * rate / bins
        self.spectrum.reset(freqs, self.waterfall.levels())
        self.waterfall.reset(f0, rate, self.history, self.row_samples / rate)
        self.occupied.clear()
        self.pano = None
        self.resets += 1

    def _reset_scan(self, key, h, bins):
        _, start, stop, native_hz = key
        k = max(1, int(np.ceil((stop - start) / native_hz / PANORAMA_MAX_BINS)))
        bin_hz = native_hz * k
        width = int(np.ceil((stop - start) / bin_hz)) + 1
        self.layout_key = key
        self.ring = RowRing(self.history, width)
        self.pano = (start, bin_hz, k, np.full(width, self.ring.floor, np.float32))
        rate = native_hz * bins
        self.row_samples = int(h.get("samples_per_row") or bins)
        self.spectrum.reset(start + np.arange(width) * bin_hz, self.waterfall.levels())
        self.waterfall.reset(start - bin_hz / 2, width * bin_hz, self.history,
                             self.row_samples / rate)
        self.occupied.clear()
        self.resets += 1

    def _on_decision(self, d: dict) -> dict:
        self.decisions_in += 1
        if self.last_row is not None:
            h = self.last_row[0]
            spr = self.row_samples
            y0 = self.ring.total + (d["sample_start"] - h.get("sample_index", 0)) / spr
            d["_row"] = y0
            if d["task"] in BOX_TASKS:
                self.waterfall.add_box(d, y0, y0 + d["sample_count"] / spr)
        if d["task"] == "anomaly":
            self.anomaly.add(d["time"], d["score"])
        if d["task"] == "occupancy":
            self.occupied[(d["freq_lo"], d["freq_hi"])] = (d["label"] == "occupied",
                                                           time.monotonic())
        return d

    def _on_status(self, h: dict, topic: str = "status"):
        self.status.update(h)
        if topic != "status":
            return
        scan = ((float(h["scan_start"]), float(h["scan_stop"]))
                if "scan_start" in h and "scan_stop" in h else None)
        if scan is None:
            for name in ("scan_start", "scan_stop", "scan_step", "scan_steps", "scan_center"):
                self.status.pop(name, None)
        if scan != self.scan and self.pano is not None:
            self.layout_key = None      # left or changed the scan: rebuild at the next row
        self.scan = scan

    def _show_occupancy(self):
        now = time.monotonic()
        bands = [band for band, (occ, when) in self.occupied.items() if occ and now - when < 1.0]
        self.spectrum.show_occupancy(bands, self.waterfall.levels())

    def status_text(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        c, s = self.counters, self.status
        self._rates.append((now, self.frames, self.decisions_in))
        t0, f0, d0 = self._rates[0]
        dt = max(now - t0, 1e-9)
        age = "never" if c.last_message is None else f"{now - c.last_message:.1f} s ago"
        state = "receiving" if c.last_message and now - c.last_message < 3 else "waiting"
        where = ""
        if self.pano is not None and self.layout_key:
            start, stop = self.layout_key[1:3]
            where = (f" | scan {pg.siFormat(start, suffix='Hz', precision=7)} - "
                     f"{pg.siFormat(stop, suffix='Hz', precision=7)} step "
                     f"{s.get('scan_step', 0) + 1}/{s.get('scan_steps', '?')} "
                     f"{self.ring.bins} bins")
        elif self.layout_key:
            freq, rate, bins = self.layout_key
            where = (f" | {pg.siFormat(freq, suffix='Hz', precision=7)} "
                     f"{pg.siFormat(rate, suffix='S/s')} {bins} bins")
        lat = ""
        if "latency_p50_s" in s:
            lat = f" | latency p50 {s['latency_p50_s']:.3f} p95 {s.get('latency_p95_s', 0):.3f} s"
        return (f"{state} {self.source} | last {age} | {(self.frames - f0) / dt:.1f} fr/s "
                f"{(self.decisions_in - d0) / dt:.1f} dec/s | dropped "
                f"{c.dropped_queue + c.dropped_render} here, {s.get('dropped', 0)} engine, "
                f"{s.get('windows_dropped', 0)} windows | malformed {c.malformed} | "
                f"alarms {self.anomaly.alarms} | model "
                f"{s.get('model', '?')} {s.get('device', '')}{where}{lat}"
                + (" | PAUSED" if self.paused else ""))

    def stats(self) -> dict:
        """Counts for scripts and tests (``--stats``)."""
        vb = self.waterfall.getPlotItem().vb
        scene_rect = vb.mapRectToScene(vb.boundingRect())
        rect = self.waterfall.mapFromScene(scene_rect).boundingRect()
        top_left = self.waterfall.mapTo(self, rect.topLeft())
        c = self.counters
        return {"frames": self.frames, "rows": self.ring.total if self.ring else 0,
                "decisions": self.decisions_in, "boxes_drawn": self.waterfall.boxes_drawn,
                "boxes_shown": len(self.waterfall.boxes), "malformed": c.malformed,
                "dropped": c.dropped_queue + c.dropped_render, "lost_seq": c.lost_seq,
                "layout": list(self.layout_key) if self.layout_key else None,
                "resets": self.resets, "scan": list(self.scan) if self.scan else None,
                "history": self.history, "first_sample": getattr(self, "first_sample", None),
                "samples_per_row": getattr(self, "row_samples", None),
                "x_range": list(vb.viewRange()[0]),
                "waterfall_px": [top_left.x(), top_left.y(), rect.width(), rect.height()],
                "levels": list(self.waterfall.levels()),
                "anomalies": len(self.anomaly.scores), "alarms": self.anomaly.alarms,
                "labels": list(self.waterfall.labels)}
