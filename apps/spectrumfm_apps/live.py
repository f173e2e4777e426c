"""The live side of `spectrumfm run`: its options, and the supervisor that runs beside a
live flowgraph (scan steps, the radio's status, faults)."""

from __future__ import annotations

import logging
import math
import time

from spectrumfm import radio as limits
from spectrumfm.errors import InputError
from spectrumfm.trigger import Trigger

log = logging.getLogger("spectrumfm")

DEFAULT_RATE = 2.4e6
DEFAULT_FREQ = 100e6
STATUS_PERIOD_S = 1.0
MAX_WATCHDOG_S = 10.0


def add_arguments(p):
    live = p.add_argument_group("live radios (--source soapy|rtl_tcp)")
    live.add_argument("--antenna", help="antenna port (SoapySDR), e.g. RX2 or TX/RX")
    live.add_argument("--bandwidth", type=float, help="analog bandwidth in Hz (SoapySDR)")
    live.add_argument("--ppm", type=int, default=0, help="frequency correction, ppm")
    live.add_argument("--reconnect", action="store_true",
                      help="rtl_tcp: keep retrying a server that went away, with back-off")
    live.add_argument("--watchdog", type=float, default=5.0, metavar="S",
                      help="seconds without samples before the radio counts as lost "
                           "(default %(default)s, at most 10)")
    live.add_argument("--scan", metavar="START:STOP",
                      help="retune across START..STOP Hz in steps of 80%% of the sample rate")
    live.add_argument("--dwell", type=float, default=1.0, metavar="S",
                      help="seconds of signal at each scan step (default %(default)s)")
    cap = p.add_argument_group("triggered capture")
    cap.add_argument("--capture-on", action="append", metavar="EXPR",
                     help="record a SigMF snippet around each decision that matches, e.g. "
                          "'task=occupancy,score>0.8' or 'label=LTE' (comma: and; repeat "
                          "the option or use ';' for or)")
    cap.add_argument("--capture-dir", default="captures", help="where snippets go (default "
                                                               "%(default)s)")
    cap.add_argument("--capture-pre", type=float, default=0.5, metavar="S",
                     help="seconds before the decision (default %(default)s)")
    cap.add_argument("--capture-post", type=float, default=0.5, metavar="S",
                     help="seconds after the decision (default %(default)s)")


def check_args(args, live: bool):
    """Validate the live and capture options; fills in live defaults. InputError if bad."""
    for expr in args.capture_on or ():
        try:
            Trigger(expr)
        except ValueError as exc:
            raise InputError(f"--capture-on {expr}: {exc}") from None
    for name in ("capture_pre", "capture_post"):
        value = getattr(args, name)
        if not (math.isfinite(value) and 0 <= value <= 60):
            raise InputError(f"--{name.replace('_', '-')} must be 0-60 seconds, got {value:g}")
    if not live:
        for name in ("scan", "reconnect", "antenna", "bandwidth"):
            if getattr(args, name):
                raise InputError(f"--{name} needs a live radio (--source soapy|rtl_tcp)")
        return
    if not 0 < args.watchdog <= MAX_WATCHDOG_S:
        raise InputError(f"--watchdog must be in (0, {MAX_WATCHDOG_S:g}] seconds, "
                         f"got {args.watchdog:g}")
    if args.bandwidth is not None and not (math.isfinite(args.bandwidth) and args.bandwidth > 0):
        raise InputError(f"--bandwidth must be a positive number of Hz, got {args.bandwidth:g}")
    if args.scan:
        if args.freq is not None:
            raise InputError("give --scan START:STOP or --freq, not both")
        try:
            args.scan_range = limits.parse_scan(args.scan)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if not (math.isfinite(args.dwell) and args.dwell > 0):
            raise InputError(f"--dwell must be a positive number of seconds, got {args.dwell:g}")
        args.freq = args.scan_range[0]
    args.samp_rate = args.samp_rate or DEFAULT_RATE
    args.freq = args.freq or DEFAULT_FREQ


class Supervisor:
    """Called every 0.1 s while a live flowgraph runs (``tick``): steps a scan, publishes the
    radio's status, and returns the radio's fault when it has one (the caller stops)."""

    def __init__(self, radio, args, publisher=None):
        self.radio = radio
        self.publisher = publisher
        self.centers = []
        if args.scan:
            self.centers = limits.scan_centers(*args.scan_range, radio.samp_rate)
            radio.retune(self.centers[0])
            log.info("scanning %s in %d steps of %g Hz, %g s each", args.scan,
                     len(self.centers), limits.USABLE_FRACTION * radio.samp_rate, args.dwell)
        self.scan = args.scan_range if args.scan else None
        self.dwell = int(args.dwell * radio.samp_rate)
        self.step = 0
        self._step_began = 0
        self._status_at = 0.0

    def tick(self):
        fault = self.radio.fault
        if fault:
            return fault
        if len(self.centers) > 1:
            now = self.radio.samples_produced
            if now - self._step_began >= self.dwell:
                self.step = (self.step + 1) % len(self.centers)
                self.radio.retune(self.centers[self.step])
                self._step_began = now
        if self.publisher is not None and time.monotonic() - self._status_at >= STATUS_PERIOD_S:
            self._status_at = time.monotonic()
            self.publish_status()
        return None

    def status(self):
        st = {"source": self.radio.label, **self.radio.stats()}
        if self.scan:
            st.update(scan_start=self.scan[0], scan_stop=self.scan[1], scan_step=self.step,
                      scan_steps=len(self.centers), scan_center=self.centers[self.step])
        return st

    def publish_status(self):
        from gnuradio.spectrumfm.pmtutil import PORT_STATUS, dict_to_pmt

        self.publisher.to_basic_block()._post(PORT_STATUS, dict_to_pmt(self.status()))
