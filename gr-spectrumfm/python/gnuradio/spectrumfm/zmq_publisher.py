"""Publishes spectrum rows, decisions and status on a ZeroMQ PUB socket (schema v1)."""

import ipaddress
import json
import logging
import math
import threading

import numpy as np
import pmt
import zmq
from gnuradio import gr

from spectrumfm import schema
from spectrumfm.errors import InputError

from .pmtutil import PORT_DECISIONS, PORT_STATUS, RX_FREQ, RX_RATE, RX_TIME, pmt_to_dict

log = logging.getLogger("spectrumfm.zmq_publisher")

# Long enough for the "eos" message to leave on a healthy link, short enough that a
# vanished subscriber cannot hold the process open at exit.
LINGER_MS = 500


def check_address(address):
    """Validate a ZMQ bind address; return True when it is reachable from other hosts.

    Raises InputError naming the address for a malformed TCP port.
    """
    address = str(address)
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise InputError(f"{address}: not a ZeroMQ address (expected tcp://HOST:PORT)")
    if scheme != "tcp":
        return False  # ipc:// and inproc:// never leave the machine
    host, colon, port = rest.rpartition(":")
    if not colon or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
        raise InputError(f"{address}: the port must be 1-65535 (or * for any free port)")
    host = host.strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # "*" or an interface name: every address of that interface


class zmq_publisher(gr.sync_block):
    """Sends what the engine sees to any ZeroMQ subscriber, in the wire schema v1.

    The messages follow ``spectrumfm.schema`` (``docs/messages.md``): topic frame, JSON
    header with version, per-topic ``seq``, UTC send time, centre frequency and sample rate,
    and for spectrum rows a float32 payload. This is a Python block rather than gr-zeromq's
    ``pub_sink``/``pub_msg_sink`` because those send raw item bytes or serialised PMTs with no
    topic and no header: a client would need GNU Radio to read them, and could not tell
    which frequency and rate a row belongs to. Here a dashboard in plain Python (pyzmq, json,
    numpy) reads everything, and spectrum, decisions and status share one socket.

    Sends never block the flowgraph: the socket has a high-water mark of ``hwm`` messages
    per subscriber and every send is non-blocking; a message that does not fit is dropped
    and counted (``dropped``; the per-topic ``seq`` shows the gap to the client).

    Ports:
        in0: float32 vectors of ``fft_size``: one dB spectrum row per item. ``rx_freq`` and
            ``rx_rate`` tags (pmt double, Hz) retune the headers from their row on;
            ``rx_time`` (pmt tuple of uint64 s, double s) sets the signal time.
        decisions (message in, optional): schema-v1 decisions as PMT dicts; anything else
            is counted as ``malformed_in`` and skipped.
        status (message in, optional): PMT dicts of counters from other blocks. The last one
            (merged over time) is re-published every ``status_interval`` seconds with this
            block's own counters, so a dashboard that subscribes late configures itself.

    Args:
        address: ZeroMQ address to bind. The default is reachable from this host only; a
            ``tcp://*:PORT`` or ``tcp://0.0.0.0:PORT`` bind is honoured but logged as a
            warning, as it exposes the stream to the network.
        fft_size: bins per row.
        samp_rate: sample rate in Hz until an ``rx_rate`` tag says otherwise.
        center_freq: centre frequency in Hz until an ``rx_freq`` tag says otherwise.
        hwm: messages queued per subscriber before dropping.
        status_interval: seconds between status messages (0 disables them).
        samples_per_row: input samples one row stands for (FFT frames averaged times
            ``fft_size``; None or 0: ``fft_size``); gives each row its ``sample_index`` and
            ``time``.

    At stop() an ``eos`` message is published and the socket is closed. Counters: stats().
    Raises InputError for a malformed address or one that cannot be bound.
    """

    def __init__(self, address="tcp://127.0.0.1:5557", fft_size=1024, samp_rate=1.0,
                 center_freq=0.0, hwm=64, status_interval=1.0, samples_per_row=None):
        fft_size = int(fft_size)
        if fft_size < 1:
            raise InputError(f"fft_size: must be a positive number of bins, got {fft_size}")
        if not float(samp_rate) > 0:
            raise InputError(f"samp_rate: must be positive, got {samp_rate}")
        if int(hwm) < 1:
            raise InputError(f"hwm: must be at least 1 message, got {hwm}")
        if samples_per_row is not None and int(samples_per_row) < 0:
            raise InputError(f"samples_per_row: must be positive, got {samples_per_row}")
        gr.sync_block.__init__(self, name="spectrumfm_zmq_publisher",
                               in_sig=[(np.float32, fft_size)], out_sig=None)
        self.address = str(address)
        self.fft_size = fft_size
        self.samples_per_row = int(samples_per_row or fft_size)
        self.hwm = int(hwm)
        self.status_interval = float(status_interval)
        self._samp_rate = float(samp_rate)
        self._center_freq = float(center_freq)
        # Signal time of a row = _t_anchor + (sample_index - _idx_anchor) / samp_rate,
        # re-anchored at every rate change and rx_time tag.
        self._t_anchor = 0.0
        self._idx_anchor = 0
        self._seq = {topic: 0 for topic in schema.TOPICS}
        self._counts = {"spectrum_sent": 0, "decisions_sent": 0, "status_sent": 0,
                        "dropped": 0, "malformed_in": 0, "rows_in": 0}
        self._last_status = {}
        self._lock = threading.Lock()  # ZMQ sockets are not thread-safe
        self._stop_evt = threading.Event()
        self._thread = None
        self._sock = None
        self.public = check_address(self.address)
        self._open()

        self.message_port_register_in(PORT_DECISIONS)
        self.set_msg_handler(PORT_DECISIONS, self._on_decision)
        self.message_port_register_in(PORT_STATUS)
        self.set_msg_handler(PORT_STATUS, self._on_status)

    def _open(self):
        sock = zmq.Context.instance().socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        # A plain PUB drops silently at the high-water mark; with NODROP a full queue
        # raises zmq.Again on our non-blocking send instead, so every drop is counted.
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise InputError(f"{self.address}: {exc.strerror.lower()}") from None
        self._sock = sock
        self.endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        if self.public:
            log.warning("%s: publishing to the network, not only to this host", self.address)

    # --- scheduler hooks --------------------------------------------------------------

    def start(self):
        if self._sock is None:  # restarted after stop(): bind again
            try:
                self._open()
            except InputError as exc:
                log.error("%s", exc)
                return False
        if self.status_interval > 0:
            self._stop_evt.clear()
            self._thread = threading.Thread(target=self._status_loop, daemon=True,
                                             name="spectrumfm-zmq-status")
            self._thread.start()
        return True

    def stop(self):
        self._stop_evt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            counts = self.stats()
            self._publish(schema.TOPIC_EOS, {**self._where(), **counts,
                                             "samples": counts["rows_in"] * self.samples_per_row})
            with self._lock:
                self._sock.close(LINGER_MS)
                self._sock = None
        return True

    def work(self, input_items, output_items):
        rows = input_items[0]  # (n_rows, fft_size) dB
        first = self.nitems_read(0)
        tags = sorted(self.get_tags_in_window(0, 0, len(rows)), key=lambda t: t.offset)
        t = 0
        for i, row in enumerate(rows):
            while t < len(tags) and tags[t].offset <= first + i:
                self._apply_tag(tags[t])
                t += 1
            index = (first + i) * self.samples_per_row
            header = {**self._where(), "fft_size": self.fft_size, "sample_index": index,
                      "samples_per_row": self.samples_per_row, "time": self._time_at(index)}
            self._publish(schema.TOPIC_SPECTRUM, header, row, counter="spectrum_sent")
        with self._lock:
            self._counts["rows_in"] += len(rows)
        return len(rows)

    # --- tags and time ----------------------------------------------------------------

    def _time_at(self, index):
        return self._t_anchor + (index - self._idx_anchor) / self._samp_rate

    def _apply_tag(self, tag):
        index = tag.offset * self.samples_per_row
        try:
            if pmt.eq(tag.key, RX_FREQ):
                freq = pmt.to_double(tag.value)
                if math.isfinite(freq):  # a NaN would make the JSON header unencodable
                    self._center_freq = freq
            elif pmt.eq(tag.key, RX_RATE):
                rate = pmt.to_double(tag.value)
                if math.isfinite(rate) and rate > 0 and rate != self._samp_rate:
                    self._t_anchor, self._idx_anchor = self._time_at(index), index
                    self._samp_rate = rate
            elif pmt.eq(tag.key, RX_TIME):
                self._t_anchor = (pmt.to_uint64(pmt.tuple_ref(tag.value, 0))
                                  + pmt.to_double(pmt.tuple_ref(tag.value, 1)))
                self._idx_anchor = index
        except (RuntimeError, ValueError, TypeError):
            log.debug("ignored a %s tag of the wrong type", pmt.symbol_to_string(tag.key))

    def _where(self):
        return {"center_freq": self._center_freq, "samp_rate": self._samp_rate}

    # --- sending ----------------------------------------------------------------------

    def _publish(self, topic, header, row=None, counter=None):
        """Encode and send without blocking; count it in ``counter``, or as dropped."""
        with self._lock:
            if self._sock is None:
                return
            frames = schema.encode(topic, header, self._seq[topic], row)
            self._seq[topic] += 1  # also for a dropped message, so the client sees the gap
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                self._counts["dropped"] += 1
                return
            if counter:
                self._counts[counter] += 1

    def _malformed(self, port, why):
        with self._lock:
            self._counts["malformed_in"] += 1
            first = self._counts["malformed_in"] == 1
        # The first one is worth a warning; a stream of them would flood the log.
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "%s: skipped a malformed message (%s); further ones are only counted",
                port, why)

    def _on_decision(self, msg):
        decision = pmt_to_dict(msg)
        if decision is None:
            self._malformed("decisions", "not a dict")
            return
        try:
            schema.validate_decision(decision)
            self._publish(schema.TOPIC_DECISION, decision, counter="decisions_sent")
        except (schema.SchemaError, ValueError, TypeError) as exc:
            self._malformed("decisions", exc)

    def _on_status(self, msg):
        status = pmt_to_dict(msg)
        if status is None:
            self._malformed("status", "not a dict")
            return
        try:
            json.dumps(status, allow_nan=False)  # it is re-encoded every interval
        except (ValueError, TypeError) as exc:
            self._malformed("status", exc)
            return
        with self._lock:  # the status thread reads it
            self._last_status.update(status)
        self._send_status()

    def _send_status(self):
        with self._lock:
            status = {**self._last_status, **self._where(), "fft_size": self.fft_size,
                      "samples_per_row": self.samples_per_row, **self._counts}
        self._publish(schema.TOPIC_STATUS, status, counter="status_sent")

    def _status_loop(self):
        self._send_status()
        while not self._stop_evt.wait(self.status_interval):
            self._send_status()

    def stats(self):
        """Counters: spectrum_sent, decisions_sent, status_sent, dropped, malformed_in, rows_in."""
        with self._lock:
            return dict(self._counts)
