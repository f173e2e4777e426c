"""rtl_tcp client: an RTL-SDR served over the network (``rtl_tcp`` on a Raspberry Pi)."""

import collections
import itertools
import logging
import socket
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from spectrumfm import radio
from spectrumfm.errors import RadioError

from .pmtutil import EOS, GAP, RX_FREQ, RX_RATE

log = logging.getLogger("spectrumfm.rtltcp_source")

_RECV_BYTES = 1 << 16
_POLL_S = 0.1            # longest wait in work() and in recv(): how soon stop() is noticed
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class rtltcp_source(gr.sync_block):
    """Complex samples from an ``rtl_tcp`` server, with tags, loss counting and a watchdog.

    Why not gr-osmosdr's client (``osmosdr.source("rtl_tcp=HOST:PORT")``): measured with
    gr-osmosdr 0.2.4 (Debian 12) against ``tests/rtltcp_server.py``, when the server goes
    away its work() spins on recv() returning 0 at full CPU and never returns, so the
    flowgraph can neither notice nor stop (``tb.stop()`` hangs); a server that stalls blocks
    it in recv() for ever; it gives no ``rx_freq``/``rx_rate`` tags; and its constructor
    holds Python's GIL while it connects. Here a thread reads the socket into a bounded
    queue, work() waits at most 0.1 s, and a lost server is noticed and reported.

    Ports:
        out0: complex64, the server's unsigned 8-bit IQ as (byte - 127.5) / 128.

    Tags (absolute offsets): ``rx_rate`` and ``rx_freq`` (pmt double, Hz) on the first
    sample, after each retune (set_center_freq) and after a reconnect; ``spectrumfm_gap``
    (pmt uint64, samples lost) where data was lost: the queue was full, or the connection
    was down (lost samples estimated from the outage's length); ``spectrumfm_eos`` on the
    last sample when the stream ends (``duration`` reached, or the server lost without
    ``reconnect``), after which work() returns WORK_DONE. One sample is always held back
    until the next arrives, so that there is a last sample to carry the end-of-stream tag.

    Args:
        host, port: the server (``rtl_tcp -a 0.0.0.0 -p 1234`` on the radio's machine).
        samp_rate: S/s; outside the RTL2832U's ranges (``spectrumfm.radio.RTLSDR_RATES``) it
            is clamped to the nearest it takes, with a warning.
        center_freq: Hz; clamped likewise to the tuner's range (from the server's greeting).
        gain: tuner gain in dB, set to the tuner's nearest step (a warning when that differs);
            None or NaN: automatic.
        ppm: frequency correction, parts per million (integer).
        timeout: seconds: to connect, and without data before the server counts as lost.
        reconnect: on loss, retry with back-off (0.5 s doubling to 8 s) for ever, instead of
            ending the stream.
        duration: end the stream after this many seconds of signal (0: never).
        buffer_s: queue length, seconds of signal; when full, new data is dropped, counted.
        settle_s: seconds of signal discarded after each retune (data already in flight at
            the old frequency; the server's stream carries no marker of where it changes).

    Raises RadioError naming HOST:PORT when the server cannot be reached or does not greet
    with the rtl_tcp header within ``timeout``. After the stream ended early, ``fault`` says
    why (else None). Counters: stats().
    """

    def __init__(self, host="127.0.0.1", port=1234, samp_rate=2.4e6, center_freq=100e6,
                 gain=None, ppm=0, timeout=5.0, reconnect=False, duration=0.0, buffer_s=1.0,
                 settle_s=0.05):
        gr.sync_block.__init__(self, name="spectrumfm_rtltcp_source", in_sig=None,
                               out_sig=[np.complex64])
        self.host, self.port = str(host), int(port)
        self.tuner = radio.TUNERS[0]          # until the server's greeting names it
        self.samp_rate = self._clamp(float(samp_rate), radio.RTLSDR_RATES, "sample rate", "S/s")
        self.center_freq = float(center_freq)
        self.gain = None if gain is None or gain != gain else float(gain)
        self.ppm, self.timeout, self.reconnect = int(ppm), float(timeout), bool(reconnect)
        self.settle_s = float(settle_s)
        self._limit = int(round(float(duration) * self.samp_rate)) if duration else None
        self._max_queued = max(1, int(float(buffer_s) * self.samp_rate))
        self._cond = threading.Condition()
        self._queue = collections.deque()     # [samples, tags at its first sample]
        self._queued = 0
        self._lost_pending = 0                # samples lost since the last queued chunk
        self._dropping = False
        self._discard = 0                     # samples to drop (settling after a retune)
        self._carry = b""                     # an odd byte left from the last recv
        self._ended = False                   # no more data will come (fault or stop)
        self._done = False
        self._stopping = threading.Event()
        self._send_lock = threading.Lock()
        self._thread = None
        self.fault = None
        self.samples_produced = 0
        self._counts = {"overflows": 0, "samples_dropped": 0, "reconnects": 0}
        self._srcid = pmt.intern(self.alias())
        self._sock = self._open()             # clamps the frequency to the tuner's range
        self._pending_tags = [(RX_RATE, self.samp_rate), (RX_FREQ, self.center_freq)]

    @property
    def where(self):
        return f"rtl_tcp {self.host}:{self.port}"

    # --- connection -------------------------------------------------------------------
    def _open(self):
        """Connect, read the greeting, send the settings; RadioError naming the problem."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.timeout:
            raise RadioError(f"{self.where}: no answer within {self.timeout:g} s") from None
        except OSError as exc:
            hint = " (is rtl_tcp running there?)" if isinstance(exc, ConnectionRefusedError) else ""
            raise RadioError(f"{self.where}: {(exc.strerror or str(exc)).lower()}{hint}") from None
        try:
            tuner_type, _ = radio.parse_header(self._recv_exactly(sock, radio.HEADER_LEN))
        except (OSError, ValueError) as exc:
            sock.close()
            raise RadioError(f"{self.where}: {exc}") from None
        self.tuner = radio.TUNERS.get(tuner_type, radio.TUNERS[0])
        self.center_freq = self._clamp(self.center_freq, self.tuner.freq_ranges, "frequency",
                                       "Hz")
        if self.gain is not None and self.tuner.gains_db:
            step = radio.nearest_step(self.gain, self.tuner.gains_db)
            if abs(step - self.gain) > 0.05:
                log.warning("%s: gain %g dB: the %s tuner has steps of %s dB; using %g",
                            self.where, self.gain, self.tuner.name,
                            " ".join(f"{g:g}" for g in self.tuner.gains_db), step)
            self.gain = step
        sock.settimeout(_POLL_S)
        self._send_settings(sock)
        return sock

    def _clamp(self, value, ranges, what, unit):
        used = radio.clamp_to_ranges(value, ranges)
        if abs(used - value) > 1e-9 * max(1.0, abs(value)):
            log.warning("%s: %s %g %s is outside what the radio takes (%s); using %g",
                        self.where, what, value, unit, radio.describe_ranges(ranges, unit), used)
        return used

    def _recv_exactly(self, sock, n):
        data = b""
        while len(data) < n:
            try:
                chunk = sock.recv(n - len(data))
            except socket.timeout:
                raise OSError(f"no rtl_tcp greeting within {self.timeout:g} s") from None
            if not chunk:
                raise OSError("the server closed the connection before greeting")
            data += chunk
        return data

    def _send_settings(self, sock):
        cmds = [radio.command(radio.CMD_RATE, round(self.samp_rate)),
                radio.command(radio.CMD_FREQ, round(self.center_freq)),
                radio.command(radio.CMD_PPM, self.ppm)]
        if self.gain is None:
            cmds.append(radio.command(radio.CMD_GAIN_MODE, 0))
        else:
            cmds += [radio.command(radio.CMD_GAIN_MODE, 1),
                     radio.command(radio.CMD_GAIN, round(10 * self.gain))]
        with self._send_lock:
            sock.sendall(b"".join(cmds))
        self._discard = int(self.settle_s * self.samp_rate)

    def set_center_freq(self, center_freq):
        """Retune; samples from ``settle_s`` after it on carry the new ``rx_freq``."""
        self.center_freq = self._clamp(float(center_freq), self.tuner.freq_ranges, "frequency",
                                       "Hz")
        with self._cond:
            sock = self._sock
            self._discard = int(self.settle_s * self.samp_rate)
            self._pending_tags = [t for t in self._pending_tags if not pmt.eq(t[0], RX_FREQ)]
            self._pending_tags.append((RX_FREQ, self.center_freq))
        if sock is not None:
            try:
                with self._send_lock:
                    sock.sendall(radio.command(radio.CMD_FREQ, round(self.center_freq)))
            except OSError:
                pass  # the reader notices the loss; a reconnect sends the new frequency

    # --- reader thread ----------------------------------------------------------------
    def start(self):
        if self._sock is None:  # started again after stop()
            try:
                self._sock = self._open()
            except RadioError as exc:
                log.error("%s", exc)
                return False
        self._stopping.clear()
        self._thread = threading.Thread(target=self._read_loop, daemon=True,
                                        name="spectrumfm-rtltcp")
        self._thread.start()
        return True

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _POLL_S + 1)
        self._close()
        return True

    def _close(self):
        with self._cond:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _read_loop(self):
        while not self._stopping.is_set():
            reason = self._stream()
            self._close()
            if self._stopping.is_set():
                break
            if not self.reconnect:
                self._end(f"{self.where}: {reason}")
                return
            if not self._reconnect(reason):
                break
        self._end(None)

    def _stream(self):
        """Read until the connection is lost or stop(); returns why it was lost."""
        last = time.monotonic()
        while not self._stopping.is_set():
            try:
                data = self._sock.recv(_RECV_BYTES)
            except socket.timeout:
                if time.monotonic() - last > self.timeout:
                    return f"no samples for {self.timeout:g} s (server stalled or network down)"
                continue
            except OSError as exc:
                return f"connection lost ({(exc.strerror or str(exc)).lower()})"
            if not data:
                return "connection closed by the server"
            last = time.monotonic()
            self._push(data)
        return None

    def _reconnect(self, reason):
        """Retry with back-off until connected (True) or stop() (False)."""
        log.warning("%s: %s; reconnecting", self.where, reason)
        lost_at = time.monotonic()
        for attempt in itertools.count():
            if self._stopping.wait(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]):
                return False
            try:
                sock = self._open()
            except RadioError as exc:
                log.debug("%s", exc)
                continue
            outage = time.monotonic() - lost_at
            with self._cond:
                self._sock, self._carry = sock, b""
                self._lost_pending += int(outage * self.samp_rate)
                self._pending_tags = [(RX_RATE, self.samp_rate), (RX_FREQ, self.center_freq)]
                self._counts["reconnects"] += 1
            log.warning("%s: reconnected after %.1f s", self.where, outage)
            return True

    def _push(self, data):
        """Bytes from the socket -> samples in the queue (or dropped and counted)."""
        with self._cond:
            data = self._carry + data
            n = len(data) // 2
            self._carry = data[2 * n:]
            skip = min(n, self._discard)
            self._discard -= skip
            n -= skip
            if n == 0:
                return
            if self._queued + n > self._max_queued:
                self._counts["overflows"] += not self._dropping   # one per run of drops
                self._counts["samples_dropped"] += n
                self._lost_pending += n
                self._dropping = True
                return
            raw = np.frombuffer(data, np.uint8, 2 * n, 2 * skip)
            x = ((raw.astype(np.float32) - 127.5) / 128.0).view(np.complex64)
            tags = self._pending_tags
            if self._lost_pending:
                tags = [(GAP, self._lost_pending)] + tags
            self._queue.append([x, tags])
            self._queued += n
            self._pending_tags, self._lost_pending, self._dropping = [], 0, False
            self._cond.notify()

    def _end(self, fault):
        with self._cond:
            if fault and not self._ended:
                self.fault = fault
                log.debug("%s", fault)
            self._ended = True
            self._cond.notify()

    # --- stream -----------------------------------------------------------------------
    def work(self, input_items, output_items):
        if self._done:
            return -1
        out = output_items[0]
        with self._cond:
            if self._queued <= 1 and not self._ended:   # one sample is always held back
                self._cond.wait(_POLL_S)
            n, last = self._how_many(len(out))
            self._take(out, n)
        if last:
            self.add_item_tag(0, self.nitems_written(0) + n - 1, EOS, pmt.PMT_T, self._srcid)
            self._done = True
        elif n == 0 and self._ended and not self._queued:
            return -1  # nothing was ever produced: no sample to carry the tag
        self.samples_produced += n
        return n

    def _how_many(self, room):
        """(samples to output now, whether they end the stream)."""
        avail = self._queued
        if self._limit is not None:
            left = self._limit - self.samples_produced
            if avail >= left and left <= room:
                return left, left > 0
            avail = min(avail, left)
        if self._ended:
            return min(room, avail), avail <= room and avail > 0
        return min(room, max(0, avail - 1)), False

    def _take(self, out, n):
        """Move n samples from the queue into out, tagging where each chunk began."""
        base, i = self.nitems_written(0), 0
        while i < n:
            x, tags = self._queue[0]
            for key, value in tags:
                val = pmt.from_uint64(value) if pmt.eq(key, GAP) else pmt.from_double(value)
                self.add_item_tag(0, base + i, key, val, self._srcid)
            k = min(len(x), n - i)
            out[i:i + k] = x[:k]
            i += k
            if k == len(x):
                self._queue.popleft()
            else:
                self._queue[0] = [x[k:], []]
        self._queued -= n

    def stats(self):
        """overflows (runs of dropped data), samples_dropped, reconnects, connected."""
        with self._cond:
            return {**self._counts, "connected": self._sock is not None,
                    "samples_out": self.samples_produced}
