"""The dashboard's plots: the spectrum (current, average, peak and min hold) and the
waterfall with the decisions drawn over it. Each class owns its pyqtgraph items."""

from __future__ import annotations

import collections

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

# A classic SDR waterfall: black, blue, cyan, yellow, red.
_SDR = pg.ColorMap([0.0, 0.25, 0.5, 0.75, 1.0],
                   [(0, 0, 0), (0, 0, 160), (0, 200, 220), (255, 230, 0), (230, 0, 0)])
COLORMAPS = {"viridis": lambda: pg.colormap.get("viridis"),
             "inferno": lambda: pg.colormap.get("inferno"),
             "sdr": lambda: _SDR}
LEFT_AXIS_PX = 64
BOX_TASKS = ("emission", "technology", "modulation")
_PALETTE = [(255, 80, 80), (80, 220, 80), (90, 160, 255), (255, 200, 40), (230, 90, 230),
            (60, 230, 230), (255, 140, 0), (200, 200, 200)]


def label_colour(label: str) -> tuple:
    """A stable colour per label (the same label is always drawn alike)."""
    return _PALETTE[sum(label.encode()) % len(_PALETTE)]


class SpectrumPlot(pg.PlotWidget):
    """The current row, an exponential average, peak hold and min hold, in dB."""

    def __init__(self):
        super().__init__()
        self.setLabel("left", "level", units="dB")
        self.setLabel("bottom", "frequency", units="Hz")
        self.showGrid(x=True, y=True, alpha=0.3)
        self.getAxis("left").setWidth(LEFT_AXIS_PX)
        self.curve = self.plot(pen=pg.mkPen((200, 200, 200), width=1))
        self.avg_curve = self.plot(pen=pg.mkPen((255, 220, 0), width=1))
        self.peak_curve = self.plot(pen=pg.mkPen((255, 60, 60), width=1))
        self.min_curve = self.plot(pen=pg.mkPen((80, 140, 255), width=1))
        self.occupancy = pg.BarGraphItem(x0=[], x1=[], y0=[], y1=[], brush=(0, 200, 0, 60),
                                         pen=None)
        self.addItem(self.occupancy)
        self.alpha = 0.2            # exponential averaging factor (0: off)
        self.freqs = self.avg = self.peak = self.low = None
        self.cursor = pg.TextItem(anchor=(1, 0))
        self.addItem(self.cursor, ignoreBounds=True)
        # Crosshair following the mouse; ``on_cursor_x`` mirrors its frequency elsewhere.
        pen = pg.mkPen((255, 255, 255, 120), width=1, style=QtCore.Qt.DashLine)
        self.vline = pg.InfiniteLine(angle=90, movable=False, pen=pen)
        self.hline = pg.InfiniteLine(angle=0, movable=False, pen=pen)
        for line in (self.vline, self.hline):
            line.setVisible(False)
            self.addItem(line, ignoreBounds=True)
        self.on_cursor_x = None
        self.scene().sigMouseMoved.connect(self._on_mouse)

    def reset(self, freqs: np.ndarray, levels: tuple):
        self.freqs = freqs
        self.avg = self.peak = self.low = None
        self.setXRange(freqs[0], freqs[-1], padding=0)
        self.setYRange(*levels, padding=0.05)

    def reset_holds(self):
        self.peak = self.low = None

    def update_row(self, row: np.ndarray):
        if self.freqs is None or row.size != self.freqs.size:
            return
        self.avg = row.copy() if self.avg is None or not self.alpha else \
            self.avg + self.alpha * (row - self.avg)
        self.peak = row.copy() if self.peak is None else np.maximum(self.peak, row)
        self.low = row.copy() if self.low is None else np.minimum(self.low, row)
        self.curve.setData(self.freqs, row)
        self.avg_curve.setData(self.freqs, self.avg if self.alpha else [])
        self.peak_curve.setData(self.freqs, self.peak)
        self.min_curve.setData(self.freqs, self.low)

    def show_occupancy(self, bands: list, levels: tuple):
        """``bands``: (freq_lo, freq_hi) of the channels occupied now."""
        lo, hi = zip(*bands) if bands else ((), ())
        self.occupancy.setOpts(x0=list(lo), x1=list(hi), y0=[levels[0]] * len(lo),
                               y1=[levels[1]] * len(lo))

    def _on_mouse(self, pos):
        vb = self.getPlotItem().vb
        if self.sceneBoundingRect().contains(pos):
            self.move_cursor(vb.mapSceneToView(pos))

    def move_cursor(self, p):
        """Put the crosshair and the readout at view point ``p`` (frequency Hz, level dB)."""
        vb = self.getPlotItem().vb
        self.cursor.setText(f"{pg.siFormat(p.x(), suffix='Hz', precision=6)}  "
                            f"{p.y():.1f} dB")
        (x0, x1), (y0, y1) = vb.viewRange()
        self.cursor.setPos(x1, y1)
        self.vline.setPos(p.x())
        self.hline.setPos(p.y())
        self.vline.setVisible(True)
        self.hline.setVisible(True)
        if self.on_cursor_x is not None:
            self.on_cursor_x(p.x())


class RowAxis(pg.AxisItem):
    """The waterfall's time axis: rows shown as seconds before the newest row."""

    def __init__(self):
        super().__init__("left")
        self.total, self.row_s = 0, 0.0

    def tickStrings(self, values, scale, spacing):
        if not self.row_s:
            return [f"{v:.0f}" for v in values]
        return [f"{(v - self.total) * self.row_s:.1f}" for v in values]


class WaterfallPlot(pg.PlotWidget):
    """Rows in absolute row numbers on y (the newest on top), frequency in Hz on x.

    The image is placed at rows ``[total - history, total)`` every frame, so decision boxes,
    set once in row numbers when they arrive, scroll with it at no cost.
    """

    def __init__(self, max_boxes: int):
        self.row_axis = RowAxis()
        super().__init__(axisItems={"left": self.row_axis})
        self.setLabel("bottom", "frequency", units="Hz")
        self.setLabel("left", "time", units="s")
        self.image = pg.ImageItem()
        self.addItem(self.image)
        self.colorbar = pg.ColorBarItem(values=(-120, -20), colorMap=COLORMAPS["viridis"](),
                                        label="dB", interactive=True, width=15)
        self.colorbar.setImageItem(self.image)
        # The colour bar lives beside the plots (``colorbar_widget``), so that the spectrum
        # and the waterfall have the same width and their linked x axes match exactly.
        self.colorbar_widget = pg.GraphicsLayoutWidget()
        self.colorbar_widget.addItem(self.colorbar)
        self.colorbar_widget.setFixedWidth(90)
        self.getAxis("left").setWidth(LEFT_AXIS_PX)
        self.max_boxes = max_boxes
        self.boxes = collections.OrderedDict()   # key -> [rect, text, decision, y0, y1]
        self.boxes_drawn = 0
        self.f0 = self.span = 0.0
        self.history = 1
        self.labels = []                         # labels drawn so far, in order (legend)
        self.on_levels = None                    # called with (lo, hi) when levels change
        self.colorbar.sigLevelsChanged.connect(self._levels_changed)   # dragged on the bar
        self.vline = pg.InfiniteLine(angle=90, movable=False,
                                     pen=pg.mkPen((255, 255, 255, 120), width=1,
                                                  style=QtCore.Qt.DashLine))
        self.vline.setVisible(False)
        self.addItem(self.vline, ignoreBounds=True)

    def set_cursor_x(self, x: float):
        """The spectrum's crosshair frequency, mirrored here."""
        self.vline.setPos(x)
        self.vline.setVisible(True)

    def set_colormap(self, name: str):
        self.colorbar.setColorMap(COLORMAPS[name]())

    def set_levels(self, lo: float, hi: float):
        self.colorbar.setLevels((lo, hi))
        self._levels_changed()

    def _levels_changed(self, *_):
        if self.on_levels is not None:
            self.on_levels(*self.levels())

    def levels(self) -> tuple:
        return tuple(self.colorbar.levels())

    def reset(self, f0: float, span: float, history: int, row_s: float):
        self.f0, self.span, self.history = f0, span, history
        self.row_axis.row_s = row_s
        self.clear_boxes()
        self.setXRange(f0, f0 + span, padding=0)

    def show_rows(self, rows: np.ndarray, total: int):
        self.image.setImage(rows, autoLevels=False)
        self.image.setRect(QtCore.QRectF(self.f0, total - self.history, self.span, self.history))
        self.row_axis.total = total
        self.setYRange(total - self.history, total, padding=0)
        self._expire_boxes(total - self.history)

    def add_box(self, d: dict, y0: float, y1: float):
        """Draw a decision's box (rows y0..y1), merging it into a box of the same label
        that it overlaps; at most ``max_boxes`` boxes stay on screen."""
        key = self._overlapping(d, y0)
        if key is not None:
            item = self.boxes[key]
            item[3], item[4] = min(item[3], y0), max(item[4], y1)
            item[2] = d if d["score"] >= item[2]["score"] else item[2]
            self._place(item)
            return
        colour = label_colour(d["label"])
        if d["label"] not in self.labels:
            self.labels.append(d["label"])
        rect = QtWidgets.QGraphicsRectItem()
        rect.setPen(pg.mkPen(colour, width=2))
        text = pg.TextItem(color=colour, anchor=(0, 1))
        self.addItem(rect)
        self.addItem(text)
        self.boxes[id(rect)] = [rect, text, d, y0, y1]
        self._place(self.boxes[id(rect)])
        self.boxes_drawn += 1
        while len(self.boxes) > self.max_boxes:
            self._remove(next(iter(self.boxes)))

    def select(self, d: dict):
        """Highlight the box that holds decision ``d`` (a click in the table)."""
        for key, item in self.boxes.items():
            width = 4 if (item[2]["label"] == d["label"] and item[3] <= self._row_of(d)
                          <= item[4] + 1 and _overlap(item[2], d)) else 2
            item[0].setPen(pg.mkPen(label_colour(item[2]["label"]), width=width))

    def clear_boxes(self):
        for key in list(self.boxes):
            self._remove(key)

    def _row_of(self, d):
        return d.get("_row", 0.0)

    def _overlapping(self, d, y0):
        for key, item in self.boxes.items():
            if item[2]["label"] == d["label"] and _overlap(item[2], d) and y0 <= item[4] + 2:
                return key
        return None

    def _place(self, item):
        rect, text, d, y0, y1 = item
        rect.setRect(QtCore.QRectF(d["freq_lo"], y0, d["freq_hi"] - d["freq_lo"],
                                   max(y1 - y0, 1.0)))
        text.setText(f"{d['label']} {d['score']:.2f}")
        text.setPos(d["freq_lo"], y1)

    def _expire_boxes(self, oldest_row: float):
        for key in [k for k, item in self.boxes.items() if item[4] < oldest_row]:
            self._remove(key)

    def _remove(self, key):
        rect, text, *_ = self.boxes.pop(key)
        self.removeItem(rect)
        self.removeItem(text)


class AnomalyPlot(pg.PlotWidget):
    """Anomaly decisions' scores over signal time, the threshold as a horizontal line and
    the scores above it (alarms) as red points."""

    def __init__(self, threshold: float = 0.5, keep: int = 2000):
        super().__init__()
        self.setLabel("left", "anomaly")
        self.setLabel("bottom", "time", units="s")
        self.getAxis("left").setWidth(LEFT_AXIS_PX)
        self.showGrid(x=True, y=True, alpha=0.3)
        self.setYRange(0, 1, padding=0.05)
        self.times = collections.deque(maxlen=keep)
        self.scores = collections.deque(maxlen=keep)
        self.alarms = 0                 # scores above the threshold since the start
        self.curve = self.plot(pen=pg.mkPen((200, 200, 200), width=1))
        self.alarm_points = pg.ScatterPlotItem(size=7, brush=pg.mkBrush(255, 40, 40),
                                               pen=None)
        self.addItem(self.alarm_points)
        self.threshold_line = pg.InfiniteLine(angle=0, movable=False,
                                              pen=pg.mkPen((255, 60, 60), width=1,
                                                           style=QtCore.Qt.DashLine))
        self.addItem(self.threshold_line)
        self.threshold = threshold
        self.threshold_line.setPos(threshold)
        self._dirty = False

    def set_threshold(self, value: float):
        self.threshold = float(value)
        self.threshold_line.setPos(self.threshold)
        self._dirty = True
        self.redraw()

    def add(self, t: float, score: float):
        self.times.append(float(t))
        self.scores.append(float(score))
        if score > self.threshold:
            self.alarms += 1
        self._dirty = True

    def alarm_times(self) -> list:
        return [t for t, s in zip(self.times, self.scores) if s > self.threshold]

    def redraw(self):
        """Draw the new scores (once per GUI tick, only when some arrived)."""
        if not self._dirty:
            return
        self._dirty = False
        t, s = np.fromiter(self.times, float), np.fromiter(self.scores, float)
        self.curve.setData(t, s)
        above = s > self.threshold
        self.alarm_points.setData(t[above], s[above])


def _overlap(a: dict, b: dict) -> bool:
    return a["freq_lo"] <= b["freq_hi"] and b["freq_lo"] <= a["freq_hi"]


def image_luma(image: QtGui.QImage) -> np.ndarray:
    """(height, width) luminance of a QImage, for tests and the screenshot check."""
    img = image.convertToFormat(QtGui.QImage.Format_RGB32)
    ptr = img.constBits()
    ptr.setsize(img.byteCount())
    bgra = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    bgra = bgra[:, :img.width()].astype(np.float32)
    return 0.114 * bgra[..., 0] + 0.587 * bgra[..., 1] + 0.299 * bgra[..., 2]
