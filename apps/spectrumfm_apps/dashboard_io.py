"""The dashboard's data side, without Qt: address parsing, the ZMQ subscriber thread and
the waterfall ring buffer.

Nothing here imports GNU Radio: only pyzmq, numpy and ``spectrumfm.schema``.
"""

from __future__ import annotations

import collections
import re
import threading
import time

import numpy as np

from spectrumfm import schema
from spectrumfm.errors import InputError

# Messages waiting for the GUI beyond this are dropped (oldest first) and counted.
PENDING_MAX = 4096
_ADDRESS = re.compile(r"tcp://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})|ipc://.+")


def check_connect_address(address: str) -> str:
    """Return ``address`` if it is a ZeroMQ address a SUB socket can connect to
    (``tcp://HOST:PORT`` with a port 1-65535, or ``ipc://PATH``); else raise InputError."""
    match = _ADDRESS.fullmatch(address or "")
    if not match or (match.group(2) and not 0 < int(match.group(2)) < 65536):
        raise InputError(f"--connect {address}: not a ZeroMQ address to connect to "
                         f"(expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:5557)")
    return address


class Counters:
    """Counters shared by the subscriber thread and the GUI (ints: atomic under the GIL)."""

    def __init__(self):
        self.received = 0
        self.malformed = 0
        self.dropped_queue = 0      # left behind by a GUI that could not keep up
        self.dropped_render = 0     # rows skipped to show the newest
        self.lost_seq = 0           # gaps in the publisher's sequence numbers
        self.last_message = None    # time.monotonic() of the last good message


class Subscriber(threading.Thread):
    """A SUB socket on its own thread: decodes each message (``schema.decode``) and appends
    ``schema.Message`` objects to ``pending`` for the GUI timer to drain.

    ZeroMQ reconnects by itself, forever, so a publisher that starts late or restarts is
    picked up. Malformed messages are counted in ``counters.malformed`` and skipped.
    """

    def __init__(self, address: str, counters: Counters):
        super().__init__(daemon=True, name="spectrumfm-dashboard-sub")
        self.address, self.counters = address, counters
        self.pending = collections.deque()
        self.lock = threading.Lock()
        self._stop_evt = threading.Event()

    def run(self):
        import zmq

        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1000)
        # Retry every 100 ms, forever and without backing off: the first rows of an engine
        # that starts after the dashboard are not lost to a long reconnect interval.
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)
        sock.subscribe(b"")
        sock.connect(self.address)
        try:
            while not self._stop_evt.is_set():
                if sock.poll(100):
                    self._receive(sock, zmq)
        finally:
            sock.close(0)

    def _receive(self, sock, zmq):
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.counters.received += 1
            try:
                msg = schema.decode(frames)
            except schema.SchemaError:
                self.counters.malformed += 1
                continue
            self.counters.last_message = time.monotonic()
            with self.lock:
                self.pending.append(msg)
                if len(self.pending) > PENDING_MAX:
                    self.pending.popleft()
                    self.counters.dropped_queue += 1

    def drain(self) -> list:
        with self.lock:
            out = list(self.pending)
            self.pending.clear()
        return out

    def stop(self):
        self._stop_evt.set()


class RowRing:
    """The waterfall's history: an index-based ring of ``rows`` dB rows.

    Each row is written twice (at ``i`` and ``i + rows``) so that ``view()`` is always one
    contiguous slice, oldest row first, with no copy of the history per row.
    """

    def __init__(self, rows: int, bins: int, floor: float = -140.0):
        self.rows, self.bins, self.floor = rows, bins, floor
        self.buf = np.full((2 * rows, bins), floor, np.float32)
        self.head = 0           # next slot to write
        self.total = 0          # rows written since the last reset

    def push(self, row: np.ndarray) -> None:
        self.buf[self.head] = row
        self.buf[self.head + self.rows] = row
        self.head = (self.head + 1) % self.rows
        self.total += 1

    def view(self) -> np.ndarray:
        """(rows, bins) dB, oldest first: a view, not a copy."""
        return self.buf[self.head:self.head + self.rows]

    def newest(self, n: int) -> np.ndarray:
        """The newest ``n`` rows, oldest first (a view)."""
        n = min(n, self.total, self.rows)
        return self.view()[self.rows - n:]
