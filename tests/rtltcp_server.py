"""A loopback rtl_tcp server for tests: the real protocol, no radio.

What ``rtl_tcp`` (librtlsdr) does, written here independently of the client under test:

- on connect, a 12-byte header: ``b"RTL0"``, tuner type (u32 big-endian; 5 = R820T) and the
  number of gain steps (u32 big-endian);
- then unsigned 8-bit interleaved IQ (``cu8``: I, Q, I, Q, ..., 127.5 = zero), paced at the
  sample rate the client last asked for;
- from the client, 5-byte commands: 1 byte command, u32 big-endian parameter
  (``COMMANDS`` below). Every command received is logged in ``commands``.

One client at a time, as rtl_tcp serves. ``drop()`` makes the server vanish (connection and
listening socket closed: a network drop or a killed rtl_tcp), ``stall()`` keeps the
connection open but sends nothing more (a hung dongle), ``listen()`` brings it back on the
same port. Binds 127.0.0.1 only.

Run alone (``python tests/rtltcp_server.py --port 1234``) it serves a tone in noise forever,
for trying ``spectrumfm run --source rtl_tcp --args 127.0.0.1:1234`` without a radio.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

COMMANDS = {1: "freq", 2: "rate", 3: "gain_mode", 4: "gain", 5: "ppm", 6: "if_gain",
            7: "test_mode", 8: "agc", 9: "direct_sampling", 10: "offset_tuning",
            11: "rtl_xtal", 12: "tuner_xtal", 13: "gain_index", 14: "bias_tee"}
R820T = 5
R820T_GAINS = 29   # gain steps of an R820T, as rtl_tcp reports
CHUNK_S = 0.01     # one send per 10 ms of signal
# Real rtl_tcp starts at the -s rate (default 2.048 MS/s) until told otherwise.
DEFAULT_RATE = 2_048_000


def to_cu8(x):
    """complex samples in [-1, 1) -> interleaved unsigned 8-bit bytes, as the RTL2832U gives."""
    iq = np.empty(2 * len(x), np.float32)
    iq[0::2], iq[1::2] = x.real, x.imag
    return np.clip(np.round(iq * 127.5 + 127.5), 0, 255).astype(np.uint8).tobytes()


def tone_in_noise(seconds, rate, tone_hz=50_000.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = 0.02 * (rng.normal(size=n) + 1j * rng.normal(size=n))
    x += 0.3 * np.exp(2j * np.pi * tone_hz / rate * np.arange(n))
    return x.astype(np.complex64)


class RtlTcpServer:
    """Serves ``samples`` (complex, looped) as rtl_tcp would; see the module docstring."""

    def __init__(self, samples, rate=DEFAULT_RATE, port=0, tuner=R820T, gains=R820T_GAINS,
                 odd_splits=False):
        self.data = to_cu8(np.asarray(samples))
        # Send each chunk in two pieces split at an odd byte, as TCP may deliver it: a client
        # must keep I and Q paired across reads.
        self.odd_splits = odd_splits
        self.rate = float(rate)
        self.port = port
        self.header = b"RTL0" + struct.pack(">II", tuner, gains)
        self.commands = []          # (name, value) in the order received
        self.connections = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._listener = None
        self._client = None
        self._stalled = threading.Event()
        self._closing = threading.Event()
        self.listen()

    # --- control ----------------------------------------------------------------------
    def listen(self):
        """Start accepting (again) on ``self.port`` (0 at first: any free port)."""
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(1)
        self.port = lst.getsockname()[1]
        self._listener = lst
        self._closing.clear()
        self._stalled.clear()
        threading.Thread(target=self._accept_loop, args=(lst,), daemon=True).start()

    def drop(self):
        """Vanish: close the client's connection and stop listening."""
        self._closing.set()
        with self._lock:
            for s in (self._client, self._listener):
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
            self._client = self._listener = None

    def stall(self):
        """Keep the connection open, send no more samples."""
        self._stalled.set()

    def values(self, name):
        """Every parameter received for command ``name`` (e.g. "freq"), in order."""
        with self._lock:
            return [v for n, v in self.commands if n == name]

    def wait_for(self, predicate, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.05)
        return False

    # --- serving ----------------------------------------------------------------------
    def _accept_loop(self, lst):
        while not self._closing.is_set():
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            with self._lock:
                if self._client is not None:   # one client at a time, as rtl_tcp
                    conn.close()
                    continue
                self._client = conn
                self.connections += 1
            threading.Thread(target=self._read_commands, args=(conn,), daemon=True).start()
            threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _read_commands(self, conn):
        buf = b""
        while True:
            try:
                chunk = conn.recv(64)
            except OSError:
                chunk = b""
            if not chunk:
                self._forget(conn)
                return
            buf += chunk
            while len(buf) >= 5:
                cmd, value = struct.unpack(">BI", buf[:5])
                buf = buf[5:]
                if cmd == 5:   # the ppm correction is a signed 32-bit value on the wire
                    value = struct.unpack(">i", struct.pack(">I", value))[0]
                with self._lock:
                    self.commands.append((COMMANDS.get(cmd, f"cmd{cmd}"), value))
                    if cmd == 2 and value > 0:
                        self.rate = float(value)

    def _stream(self, conn):
        pos, sent, t0, rate = 0, 0, time.monotonic(), self.rate
        try:
            conn.sendall(self.header)
            while not self._closing.is_set():
                if self._stalled.is_set():
                    time.sleep(0.05)
                    continue
                if rate != self.rate:   # a rate command: pace from here at the new rate
                    sent, t0, rate = 0, time.monotonic(), self.rate
                n = 2 * max(1, int(rate * CHUNK_S))
                chunk = self.data[pos:pos + n]
                if len(chunk) < n:
                    chunk += self.data[:n - len(chunk)]
                pos = (pos + n) % len(self.data)
                if self.odd_splits:
                    conn.sendall(chunk[:1001])
                    time.sleep(0.001)
                    chunk = chunk[1001:]
                conn.sendall(chunk)
                sent += n // 2
                with self._lock:
                    self.bytes_sent += n
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        except OSError:
            pass
        self._forget(conn)

    def _forget(self, conn):
        with self._lock:
            if self._client is conn:
                self._client = None
        try:
            conn.close()
        except OSError:
            pass


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="loopback rtl_tcp server: a 50 kHz tone in noise")
    ap.add_argument("--port", type=int, default=1234)
    ap.add_argument("--rate", type=float, default=250_000)
    a = ap.parse_args()
    server = RtlTcpServer(tone_in_noise(1.0, a.rate), a.rate, a.port)
    print(f"rtl_tcp server on 127.0.0.1:{server.port}; Ctrl-C stops it")
    try:
        while True:
            time.sleep(1)
            print(server.commands[-5:])
    except KeyboardInterrupt:
        server.drop()
