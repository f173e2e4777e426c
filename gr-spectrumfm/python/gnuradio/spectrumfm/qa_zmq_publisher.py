"""QA for zmq_publisher: a real flowgraph publishing to a real SUB socket on 127.0.0.1."""

import logging
import socket
import threading
import time

import numpy as np
import pmt
import pytest
import zmq
from gnuradio import blocks, gr

from gnuradio.spectrumfm.pmtutil import RX_FREQ, dict_to_pmt
from gnuradio.spectrumfm.zmq_publisher import zmq_publisher
from spectrumfm import schema
from spectrumfm.errors import InputError

FFT = 8
SPR = 16  # samples per row
RATE = 1000.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def decision(i, **extra):
    return schema.make_decision(task="technology", label="LTE", score=0.5 + i / 10,
                                sample_start=100 * i, sample_count=64, samp_rate=RATE,
                                center_freq=100e6, freq_lo=99e6, freq_hi=101e6,
                                model="test/technology", **extra)


class gate(gr.sync_block):
    """Passes rows through once the test opens it, then posts its decisions.

    Holding the stream back until the subscriber has seen a status message proves the
    subscription reached the publisher (ZMQ drops what is sent before that).
    """

    def __init__(self, msgs=()):
        gr.sync_block.__init__(self, "gate", in_sig=[(np.float32, FFT)],
                               out_sig=[(np.float32, FFT)])
        self.message_port_register_out(pmt.intern("decisions"))
        self.open = threading.Event()
        self.msgs = list(msgs)

    def work(self, input_items, output_items):
        self.open.wait(10)
        for msg in self.msgs:
            self.message_port_pub(pmt.intern("decisions"), msg)
        self.msgs = []
        output_items[0][:] = input_items[0]
        return len(output_items[0])


def subscriber(endpoint):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.RCVTIMEO, 3000)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(endpoint)
    sub.subscribe(b"")
    return sub


def wait_for(sub, topic):
    while True:
        msg = schema.decode(sub.recv_multipart())
        if msg.topic == topic:
            return msg


def run_gated(tb, g, sub):
    """Start, wait until the subscription is live, release the stream, wait for the end."""
    tb.start()
    wait_for(sub, "status")
    g.open.set()
    tb.wait()


def test_001_rows_decisions_and_eos_reach_a_subscriber():
    rows = np.arange(20)[:, None] + np.linspace(-90, -10, FFT)[None, :]  # (row, bin) dB
    tag = gr.tag_utils.python_to_tag((10, RX_FREQ, pmt.from_double(101e6)))
    src = blocks.vector_source_f(rows.ravel().tolist(), False, FFT, [tag])
    good = [decision(0), decision(1, snr_db=12.5), decision(2)]
    bad = [dict_to_pmt({"v": 1, "task": "technology"}), pmt.from_long(3),
           pmt.intern("{not json")]
    g = gate([dict_to_pmt(d) for d in good[:2]] + bad + [dict_to_pmt(good[2])])
    pub = zmq_publisher(f"tcp://127.0.0.1:{free_port()}", FFT, RATE, 100e6, hwm=1000,
                        status_interval=0.05, samples_per_row=SPR)
    tb = gr.top_block()
    tb.connect(src, g, pub)
    tb.msg_connect(g, "decisions", pub, "decisions")
    sub = subscriber(pub.endpoint)
    run_gated(tb, g, sub)

    got = {"spectrum": [], "decision": []}
    while (msg := schema.decode(sub.recv_multipart())).topic != "eos":
        got.setdefault(msg.topic, []).append(msg)
    eos = msg.header
    spectra = got["spectrum"]
    assert [m.header["seq"] for m in spectra] == list(range(20))  # nothing lost
    for i, m in enumerate(spectra):
        assert m.header["fft_size"] == FFT and m.header["sample_index"] == i * SPR
        assert m.header["time"] == pytest.approx(i * SPR / RATE)
        assert m.header["center_freq"] == (100e6 if i < 10 else 101e6)
        np.testing.assert_array_equal(m.row, rows[i].astype(np.float32))
    decided = got["decision"]
    assert [m.header["seq"] for m in decided] == [0, 1, 2]
    for sent, m in zip(good, decided):
        assert {k: v for k, v in m.header.items() if k not in ("type", "seq", "utc")} == sent
    assert eos["samples"] == 20 * SPR and eos["center_freq"] == 101e6
    assert eos["malformed_in"] == 3 and eos["dropped"] == 0
    stats = pub.stats()
    assert stats["spectrum_sent"] == 20 and stats["decisions_sent"] == 3
    assert stats["malformed_in"] == 3
    sub.close()


def test_002_status_every_interval_merges_upstream_status():
    src = blocks.vector_source_f([0.0] * FFT * 4, False, FFT)
    g = gate()
    pub = zmq_publisher(f"tcp://127.0.0.1:{free_port()}", FFT, 2e6, 433e6,
                        status_interval=0.1)
    tb = gr.top_block()
    tb.connect(src, g, pub)
    pub.to_basic_block()._post(pmt.intern("status"), dict_to_pmt({"windows_dropped": 5}))
    sub = subscriber(pub.endpoint)
    tb.start()
    statuses = [wait_for(sub, "status").header for _ in range(6)]
    g.open.set()
    tb.wait()
    seqs = [s["seq"] for s in statuses]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    last = statuses[-1]
    assert last["windows_dropped"] == 5
    assert last["center_freq"] == 433e6 and last["samp_rate"] == 2e6 and last["fft_size"] == FFT
    for key in ("spectrum_sent", "decisions_sent", "dropped", "malformed_in"):
        assert key in last
    gaps = np.diff([s["utc"] for s in statuses[2:]])  # the first may be the posted one
    assert np.all(gaps > 0.05) and np.all(gaps < 0.5)
    sub.close()


def _host_address():
    """A non-loopback IPv4 address of this host, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: no packet is sent
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_003_default_bind_is_localhost_only(caplog):
    import inspect
    default = inspect.signature(zmq_publisher).parameters["address"].default
    assert default.startswith("tcp://127.0.0.1:")
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="spectrumfm"):
        pub = zmq_publisher(f"tcp://127.0.0.1:{port}", FFT)
    assert pub.endpoint == f"tcp://127.0.0.1:{port}" and not pub.public
    assert not caplog.records
    ip = _host_address()
    if ip is not None:  # the port must not answer on the host's network address
        with pytest.raises(OSError), socket.create_connection((ip, port), timeout=1):
            pass
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with caplog.at_level(logging.WARNING, logger="spectrumfm"):
        wide = zmq_publisher(f"tcp://*:{free_port()}", FFT)
    assert wide.public
    assert any("network" in r.getMessage() for r in caplog.records)


def test_004_port_in_use_or_bad_address_is_an_input_error():
    address = f"tcp://127.0.0.1:{free_port()}"
    first = zmq_publisher(address, FFT)
    with pytest.raises(InputError) as err:
        zmq_publisher(address, FFT)
    assert str(err.value) == f"{address}: address already in use"
    with pytest.raises(InputError, match="tcp://127.0.0.1:99999: the port"):
        zmq_publisher("tcp://127.0.0.1:99999", FFT)
    with pytest.raises(InputError, match="foo://x: protocol not supported"):
        zmq_publisher("foo://x", FFT)
    assert first.endpoint == address


def test_005_full_queue_drops_and_counts_without_blocking():
    n_rows, fft = 3000, 4096  # 48 MB: more than the socket buffers hold
    src = blocks.null_source(gr.sizeof_float * fft)
    head = blocks.head(gr.sizeof_float * fft, n_rows)
    pub = zmq_publisher(f"tcp://127.0.0.1:{free_port()}", fft, hwm=2, status_interval=0)
    tb = gr.top_block()
    tb.connect(src, head, pub)
    sub = zmq.Context.instance().socket(zmq.SUB)  # subscribes, then never reads
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(pub.endpoint)
    sub.subscribe(b"")
    time.sleep(0.3)  # let the subscription reach the publisher
    started = time.monotonic()
    tb.run()
    assert time.monotonic() - started < 10
    stats = pub.stats()
    assert stats["dropped"] > 0
    assert stats["spectrum_sent"] + stats["dropped"] >= n_rows  # eos may be dropped too
    sub.close()
