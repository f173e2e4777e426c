"""QA for rtltcp_source: against the loopback rtl_tcp server of tests/rtltcp_server.py."""

import socket
import threading
import time

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gnuradio.spectrumfm import rtltcp_source
from gnuradio.spectrumfm.pmtutil import EOS, GAP, RX_FREQ, RX_RATE
from rtltcp_server import RtlTcpServer, tone_in_noise
from spectrumfm.errors import RadioError

RATE = 250_000.0


@pytest.fixture
def server():
    srv = RtlTcpServer(tone_in_noise(0.5, RATE), RATE)
    yield srv
    srv.drop()


def tags_of(sink, key):
    return [(t.offset, pmt.to_python(t.value)) for t in sink.tags() if pmt.eq(t.key, key)]


def tone_hz(x):
    """Frequency of the strongest bin: the server's tone is at +50 kHz (-50 kHz if I and Q
    were swapped by a client that lost track of byte pairs)."""
    spec = np.abs(np.fft.fftshift(np.fft.fft(x[:4096])))
    return (np.argmax(spec) - 2048) * RATE / 4096


def run(src, sink=None, timeout=10.0):
    tb = gr.top_block()
    sink = sink or blocks.vector_sink_c()
    tb.connect(src, sink)
    t0 = time.monotonic()
    runner = threading.Thread(target=tb.run, daemon=True)
    runner.start()
    runner.join(timeout)
    assert not runner.is_alive(), "the flowgraph did not end"
    return sink, time.monotonic() - t0


def test_001_tunes_the_server_and_tags_the_stream(server):
    src = rtltcp_source("127.0.0.1", server.port, RATE, 100e6, gain=20.0, ppm=-7,
                        duration=0.3)
    sink, _ = run(src)
    assert server.values("rate") == [250_000]
    assert server.values("freq") == [100_000_000]
    assert server.values("gain_mode") == [1] and server.values("gain") == [197]  # R820T step
    assert server.values("ppm") == [-7]
    assert src.tuner.name == "R820T"
    data = np.array(sink.data())
    assert len(data) == 75_000                       # duration in samples, exactly
    assert np.abs(data).max() < 1.01
    assert abs(tone_hz(data) - 50e3) < 2 * RATE / 4096    # the server's recording
    assert tags_of(sink, RX_RATE) == [(0, RATE)]
    assert tags_of(sink, RX_FREQ) == [(0, 100e6)]
    assert tags_of(sink, EOS) == [(74_999, True)]
    assert src.fault is None


def test_002_automatic_gain(server):
    src = rtltcp_source("127.0.0.1", server.port, RATE, 433.92e6, gain=None, duration=0.05)
    run(src)
    assert server.values("gain_mode") == [0] and server.values("gain") == []


def test_003_server_gone_ends_the_stream_with_a_fault(server):
    src = rtltcp_source("127.0.0.1", server.port, RATE, 100e6)
    threading.Timer(0.4, server.drop).start()
    sink, took = run(src)
    assert took < 3
    assert "connection closed by the server" in src.fault
    n = len(sink.data())
    assert 0.2 * RATE < n < 0.8 * RATE
    assert tags_of(sink, EOS) == [(n - 1, True)]     # the last sample ends the stream


def test_004_a_stalled_server_is_noticed_within_the_timeout(server):
    src = rtltcp_source("127.0.0.1", server.port, RATE, 100e6, timeout=0.6)
    threading.Timer(0.3, server.stall).start()
    sink, took = run(src)
    assert "no samples for 0.6 s" in src.fault
    assert took < 0.3 + 0.6 + 1.0
    assert tags_of(sink, EOS)


def test_005_reconnects_after_the_server_comes_back(server):
    src = rtltcp_source("127.0.0.1", server.port, RATE, 100e6, reconnect=True, duration=1.5)

    def bounce():
        server.drop()
        time.sleep(0.4)
        server.listen()

    threading.Timer(0.3, bounce).start()
    sink, _ = run(src)
    assert len(sink.data()) == int(1.5 * RATE)
    assert server.connections == 2
    assert server.values("freq") == [100_000_000, 100_000_000]   # settings sent again
    assert src.stats()["reconnects"] == 1
    gaps = tags_of(sink, GAP)
    assert len(gaps) == 1
    offset, lost = gaps[0]
    assert 0.2 * RATE < lost < 2.0 * RATE                        # the outage, estimated
    assert (offset, 100e6) in tags_of(sink, RX_FREQ)


class slow_sink(gr.sync_block):
    """Pauses on its first calls: a flowgraph that falls behind for a moment."""

    def __init__(self):
        gr.sync_block.__init__(self, "slow_sink", [np.complex64], None)
        self.n = 0
        self.gaps = []

    def work(self, input_items, output_items):
        for t in self.get_tags_in_window(0, 0, len(input_items[0])):
            if pmt.eq(t.key, GAP):
                self.gaps.append(pmt.to_uint64(t.value))
        if self.n < 20_000:
            time.sleep(0.15)
        self.n += len(input_items[0])
        return len(input_items[0])


def test_006_overflow_is_counted_and_marked(server):
    src = rtltcp_source("127.0.0.1", server.port, RATE, 100e6, duration=0.5, buffer_s=0.02)
    sink = slow_sink()
    run(src, sink)
    st = src.stats()
    assert st["overflows"] >= 1 and st["samples_dropped"] > 0
    assert sum(sink.gaps) == st["samples_dropped"]               # every loss is marked
    assert len(sink.gaps) == st["overflows"]


def test_007_retune_tags_the_new_frequency_and_keeps_iq_paired():
    server = RtlTcpServer(tone_in_noise(0.5, RATE), RATE, odd_splits=True)
    src = rtltcp_source("127.0.0.1", server.port, RATE, 100e6, duration=0.6)
    threading.Timer(0.25, src.set_center_freq, args=(101e6,)).start()
    sink, _ = run(src)
    server.drop()
    freqs = tags_of(sink, RX_FREQ)
    assert [f for _, f in freqs] == [100e6, 101e6]
    assert server.values("freq") == [100_000_000, 101_000_000]
    data = np.array(sink.data())
    assert len(data) == int(0.6 * RATE)
    for start in (0, freqs[1][0], len(data) - 4096):
        assert abs(tone_hz(data[start:]) - 50e3) < 2 * RATE / 4096, start


def test_008_unreachable_server_raises_radio_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RadioError, match=f"rtl_tcp 127.0.0.1:{port}: connection refused"):
        rtltcp_source("127.0.0.1", port, RATE, 100e6, timeout=1)


def test_009_a_server_that_is_not_rtl_tcp():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)

    def answer():
        conn, _ = lst.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(0.5)
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(RadioError, match="not an rtl_tcp server"):
        rtltcp_source("127.0.0.1", lst.getsockname()[1], RATE, 100e6, timeout=1)
    lst.close()


def test_010_values_the_dongle_cannot_take_are_clamped_with_a_warning(server, caplog):
    src = rtltcp_source("127.0.0.1", server.port, 500e3, 3e9, gain=20.0, duration=0.05)
    assert src.samp_rate == 300_000 and src.center_freq == 1766e6 and src.gain == 19.7
    text = caplog.text
    assert "sample rate 500000 S/s is outside what the radio takes" in text
    assert "using 300000" in text and "using 1.766e+09" in text
    assert "gain 20 dB: the R820T tuner has steps" in text and "using 19.7" in text
    sink, _ = run(src)
    assert server.values("rate") == [300_000] and server.values("freq") == [1_766_000_000]
    assert tags_of(sink, RX_RATE) == [(0, 300e3)] and tags_of(sink, RX_FREQ) == [(0, 1766e6)]
