"""`spectrumfm dashboard`: a desktop waterfall of what the engine publishes over ZeroMQ.

    Subscriber thread (SUB socket, schema.decode) ─► pending deque ─► QTimer drain (GUI)
        ─► MainWindow.tick: ring buffer ─► waterfall image, spectrum, decision boxes, table

Its own process; imports no GNU Radio (PyQt5, pyqtgraph, pyzmq, numpy, spectrumfm.schema).
The dashboard *connects* (the engine binds), so it never holds a port: a port in use is
the engine's error, not the dashboard's. ZeroMQ reconnects forever, so it can start before
the engine, and follows an engine that restarts with another tuning.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

from spectrumfm.errors import InputError

from .dashboard_io import check_connect_address

log = logging.getLogger("spectrumfm")

DEFAULT_CONNECT = "tcp://127.0.0.1:5557"
NO_DISPLAY = "no display; use --headless on the runner or set DISPLAY"


def add_parser(sub):
    p = sub.add_parser("dashboard", help="desktop waterfall of a running engine (ZeroMQ)",
                       description="Show the spectrum, waterfall and decisions that "
                                   "`spectrumfm run --zmq` publishes.")
    p.add_argument("--connect", default=DEFAULT_CONNECT, metavar="ADDRESS",
                   help="the engine's ZeroMQ address (default %(default)s)")
    p.add_argument("--history", type=int, default=400, help="waterfall rows kept (default 400)")
    p.add_argument("--max-boxes", type=int, default=40, help="decision boxes on screen at most")
    p.add_argument("--colormap", choices=("viridis", "inferno", "sdr"), default="viridis")
    p.add_argument("--levels", default="-120,-20", metavar="LO,HI",
                   help="waterfall dB levels (default %(default)s)")
    p.add_argument("--anomaly-threshold", type=float, default=0.5, metavar="T",
                   help="anomaly scores above T are alarms (default %(default)s)")
    p.add_argument("--screenshot", metavar="FILE.png", help="save a screenshot and exit")
    p.add_argument("--after", type=float, default=3.0, help="seconds before --screenshot")
    p.add_argument("--stats", metavar="FILE.json", help="write counts (rows, boxes...) at exit")
    p.add_argument("--benchmark", type=float, metavar="S",
                   help="feed synthetic rows as fast as possible for S seconds")
    p.add_argument("--bins", type=int, default=1024, help="bins of the --benchmark rows")
    p.add_argument("--json", action="store_true", help="--benchmark: print JSON")
    p.set_defaults(func=main)
    return p


def _check_args(args):
    check_connect_address(args.connect)
    try:
        args.levels = tuple(float(v) for v in args.levels.split(","))
        assert len(args.levels) == 2 and args.levels[0] < args.levels[1]
    except (ValueError, AssertionError):
        raise InputError(f"--levels {args.levels}: expected LO,HI in dB with LO < HI") from None
    if args.history < 2 or args.max_boxes < 0 or args.bins < 16:
        raise InputError("--history must be >= 2, --max-boxes >= 0, --bins >= 16")
    if args.after < 0 or (args.benchmark is not None and args.benchmark <= 0):
        raise InputError("--after must be >= 0 and --benchmark > 0 seconds")
    scripted = args.screenshot or args.benchmark
    has_display = (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                   or os.environ.get("QT_QPA_PLATFORM") in ("offscreen", "minimal", "vnc"))
    if not has_display:
        if not scripted:
            raise InputError(NO_DISPLAY)
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    for path in (args.screenshot, args.stats):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise InputError(f"{path}: directory {os.path.dirname(os.path.abspath(path))} "
                             f"does not exist")


def make_window(args, counters=None):
    from .dashboard_window import MainWindow

    win = MainWindow(args.connect, history=args.history, max_boxes=args.max_boxes,
                     counters=counters, anomaly_threshold=args.anomaly_threshold)
    win.cmap.setCurrentText(args.colormap)
    win.waterfall.set_levels(*args.levels)
    return win


def _write_stats(path, win):
    if path:
        with open(path, "w") as fh:
            json.dump(win.stats(), fh, indent=2)
            fh.write("\n")


def main(args) -> int:
    _check_args(args)
    from PyQt5 import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["spectrumfm dashboard"])
    if args.benchmark:
        from .dashboard_bench import benchmark
        return benchmark(app, make_window(args), args)
    from .dashboard_io import Counters, Subscriber

    counters = Counters()
    win = make_window(args, counters)
    sub = Subscriber(args.connect, counters)
    sub.start()
    drain = QtCore.QTimer(timeout=lambda: win.safe_tick(sub.drain()))
    drain.start(30)
    status = QtCore.QTimer(timeout=win.show_status)
    status.start(250)
    if args.screenshot:
        QtCore.QTimer.singleShot(int(args.after * 1000), lambda: _shoot(app, win, args))
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C closes the window
        signal.signal(signum, lambda *_: app.quit())
    win.show()
    log.info("dashboard watching %s (it connects; the engine binds)", args.connect)
    try:
        app.exec_()
    finally:
        sub.stop()
        sub.join(1.0)
    _write_stats(args.stats, win)
    return 0


def _shoot(app, win, args):
    win.safe_tick([])
    win.show_status()
    app.processEvents()
    if not win.grab().save(args.screenshot):
        print(f"spectrumfm: error: {args.screenshot}: could not save the screenshot",
              file=sys.stderr)
    app.quit()


if __name__ == "__main__":
    from .cli import main as cli_main

    sys.exit(cli_main(["dashboard", *sys.argv[1:]]))
