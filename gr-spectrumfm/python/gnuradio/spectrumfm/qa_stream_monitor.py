"""QA for stream_monitor: overflows from repeated tags, the watchdog, duration."""

import threading
import time

import numpy as np
import pmt
from gnuradio import blocks, gr

from gnuradio.spectrumfm import stream_monitor
from gnuradio.spectrumfm.pmtutil import EOS, GAP, RX_FREQ, RX_RATE, RX_TIME

RATE = 1e6


def tag(offset, key, value):
    t = gr.tag_t()
    t.offset, t.key, t.value = offset, key, value
    return t


def soapy_tags(offset, freq, seconds=None):
    """What GNU Radio's SoapySDR source sends at start, after a retune or an overflow."""
    tags = [tag(offset, RX_RATE, pmt.from_double(RATE)),
            tag(offset, RX_FREQ, pmt.from_double(freq))]
    if seconds is not None:
        whole = int(seconds)
        tags.append(tag(offset, RX_TIME, pmt.make_tuple(pmt.from_uint64(whole),
                                                        pmt.from_double(seconds - whole))))
    return tags


def run(tags, n=10_000, **kw):
    src = blocks.vector_source_c(np.ones(n, np.complex64), False, 1, tags)
    mon = stream_monitor(RATE, **kw)
    sink = blocks.vector_sink_c()
    tb = gr.top_block()
    tb.connect(src, mon, sink)
    tb.run()
    return mon, sink


def keyed(sink, key):
    return [(t.offset, pmt.to_python(t.value)) for t in sink.tags() if pmt.eq(t.key, key)]


def test_001_repeated_tags_count_as_an_overflow_and_mark_a_gap():
    tags = soapy_tags(0, 100e6) + soapy_tags(3000, 101e6) + soapy_tags(6000, 101e6)
    mon, sink = run(tags)
    assert mon.stats() == {"overflows": 1, "samples_dropped": 0, "samples_in": 10_000}
    assert keyed(sink, GAP) == [(6000, 0)]           # the retune at 3000 is not a gap
    assert len(keyed(sink, RX_FREQ)) == 3            # the radio's own tags pass through


def test_002_the_time_jump_says_how_many_samples_were_lost():
    tags = soapy_tags(0, 100e6, 1000.0) + soapy_tags(4000, 100e6, 1000.0 + 0.004 + 0.0025)
    mon, sink = run(tags)
    assert keyed(sink, GAP) == [(4000, 2500)]
    assert mon.stats()["samples_dropped"] == 2500


def test_003_duration_ends_the_stream_with_eos():
    mon, sink = run(soapy_tags(0, 100e6), n=20_000, duration=0.005)
    assert len(sink.data()) == 5000
    assert keyed(sink, EOS) == [(4999, True)]


def test_004_watchdog_sets_fault_when_no_samples_come():
    class silent(gr.sync_block):
        def __init__(self):
            gr.sync_block.__init__(self, "silent", None, [np.complex64])

        def work(self, input_items, output_items):
            time.sleep(0.05)
            return 0

    src, mon = silent(), stream_monitor(RATE, timeout=0.3)
    tb = gr.top_block()
    tb.connect(src, mon, blocks.null_sink(gr.sizeof_gr_complex))
    tb.start()
    t0 = time.monotonic()
    while mon.fault is None and time.monotonic() - t0 < 3:
        time.sleep(0.02)
    took = time.monotonic() - t0
    stopper = threading.Thread(target=lambda: (tb.stop(), tb.wait()))
    stopper.start()
    stopper.join(5)
    assert "no samples for 0.3 s" in mon.fault
    assert 0.25 < took < 1.0
    assert not stopper.is_alive()
