"""Records a SigMF snippet around each decision that matches a trigger expression."""

import datetime
import logging
import os
import threading
import time

import numpy as np
import pmt
from gnuradio import gr
from sigmf import SigMFFile

from spectrumfm import schema
from spectrumfm.errors import InputError
from spectrumfm.trigger import Trigger

from .pmtutil import RX_FREQ, pmt_to_dict
from .sigmf_recorder import EXTENSION, annotation_from_decision

log = logging.getLogger("spectrumfm.triggered_capture")

PORT_DECISIONS = pmt.intern("decisions")
# Decisions arrive after their samples: an occupancy slot within a slot and a batch, an
# emission box when it closes. The ring keeps this much beyond the pre-trigger time.
LATENCY_S = 2.0


class triggered_capture(gr.sync_block):
    """Writes ``capture-<UTC>-<n>.sigmf-meta/-data`` in ``directory`` for matching decisions.

    A snippet runs from ``pre_s`` before the first matching decision's first sample (as far
    back as the ring buffer of ``pre_s`` + 2 s reaches) to ``post_s`` after the last sample of
    the last matching decision that arrives while it is open, at most ``max_s`` long. The
    samples go to the data file as they arrive (memory stays at the ring), the metadata is
    written when the snippet closes: ``core:global_index`` of the first capture is the
    snippet's first sample in the stream, a new capture segment marks a retune
    (``rx_freq``), and each matching decision is an annotation (as ``sigmf_recorder`` writes
    them). ``core:datetime`` is the host clock's estimate for the first sample.

    Ports:
        in0: complex64, the analysed stream (connect it after ``analysis_chain``, whose
            sample indices the decisions use); ``rx_freq`` tags mark retunes.
        decisions (message in): schema-v1 decisions as PMT dicts.

    Args:
        directory: where snippets go (created if missing).
        samp_rate: S/s. center_freq: Hz, until an ``rx_freq`` tag.
        expression: trigger (``spectrumfm.trigger``), e.g. ``"task=occupancy,score>0.8"``.
        pre_s, post_s: seconds kept before and after the matching decisions.
        max_s: longest snippet, seconds. max_files: snippets per run; later matches are
            counted (``skipped``), not written.

    Raises InputError naming the expression when it does not parse, or the directory when
    it cannot be made. Counters: stats().
    """

    def __init__(self, directory, samp_rate, center_freq=0.0, expression="score>0.9",
                 pre_s=0.5, post_s=0.5, max_s=5.0, max_files=100):
        gr.sync_block.__init__(self, name="spectrumfm_triggered_capture",
                               in_sig=[np.complex64], out_sig=None)
        try:
            self.trigger = Trigger(expression)
        except ValueError as exc:
            raise InputError(f"--capture-on {expression}: {exc}") from None
        self.directory = os.fspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.directory}: {exc.strerror or exc}") from None
        self.samp_rate, self._freq = float(samp_rate), float(center_freq)
        self.pre, self.post = int(pre_s * self.samp_rate), int(post_s * self.samp_rate)
        self.max_len, self.max_files = int(max_s * self.samp_rate), int(max_files)
        self._ring = np.zeros(self.pre + int(LATENCY_S * self.samp_rate), np.complex64)
        self._end = 0                      # absolute index of the next sample to arrive
        self._retunes = [(0, self._freq)]  # (absolute index, frequency), recent ones
        self._snippet = None
        self._lock = threading.Lock()
        self._counts = {"matched": 0, "written": 0, "skipped": 0}
        self.files = []
        self.message_port_register_in(PORT_DECISIONS)
        self.set_msg_handler(PORT_DECISIONS, self._on_decision)

    # --- decisions --------------------------------------------------------------------
    def _on_decision(self, msg):
        d = pmt_to_dict(msg)
        if d is None:
            return
        try:
            schema.validate_decision(d)
        except schema.SchemaError:
            return
        if not self.trigger.matches(d):
            return
        with self._lock:
            self._counts["matched"] += 1
            end = min(d["sample_start"] + d["sample_count"] + self.post, 1 << 62)
            snip = self._snippet
            if snip is not None and d["sample_start"] <= snip["end"]:
                snip["end"] = min(max(snip["end"], end), snip["start"] + self.max_len)
                snip["decisions"].append(d)
            elif len(self.files) + (snip is not None) >= self.max_files:
                self._counts["skipped"] += 1
            else:
                self._close_snippet()
                self._open_snippet(d, end)

    def _open_snippet(self, d, end):
        oldest = max(0, self._end - len(self._ring))
        start = min(max(oldest, d["sample_start"] - self.pre), self._end)
        stamp = datetime.datetime.now(datetime.timezone.utc)
        base = os.path.join(self.directory, f"capture-{stamp:%Y%m%dT%H%M%S}-"
                                            f"{len(self.files) + 1:04d}")
        try:
            data = open(base + ".sigmf-data", "wb")
        except OSError as exc:
            log.error("%s: %s: triggered capture stops", base, exc.strerror or exc)
            self.max_files = 0
            return
        end = min(end, start + self.max_len)
        self._snippet = {"start": start, "end": end, "base": base, "decisions": [d],
                         "file": data, "written": start,
                         "utc": time.time() - (self._end - start) / self.samp_rate}
        self._write(self._ring_slice(start, min(self._end, end)))
        if self._snippet["written"] >= end:     # all of it was in the ring already
            self._close_snippet()

    def _ring_slice(self, a, b):
        """Samples [a, b) (absolute) from the ring, oldest first."""
        n = len(self._ring)
        idx = np.arange(a, b) % n
        return self._ring[idx]

    # --- stream -----------------------------------------------------------------------
    def work(self, input_items, output_items):
        x = input_items[0]
        with self._lock:
            for tag in self.get_tags_in_window(0, 0, len(x)):
                if pmt.eq(tag.key, RX_FREQ) and pmt.is_number(tag.value):
                    self._retunes = self._retunes[-63:] + [(tag.offset,
                                                            pmt.to_double(tag.value))]
            n = len(self._ring)
            keep = x[-n:]
            idx = np.arange(self._end + len(x) - len(keep), self._end + len(x)) % n
            self._ring[idx] = keep
            self._end += len(x)
            if self._snippet is not None:
                snip = self._snippet
                want = min(self._end, snip["end"]) - snip["written"]
                if want > 0:
                    self._write(x[len(x) - (self._end - snip["written"]):][:want])
                if snip["written"] >= snip["end"]:
                    self._close_snippet()
        return len(x)

    def _write(self, samples):
        snip = self._snippet
        try:
            snip["file"].write(np.ascontiguousarray(samples, "<c8").tobytes())
        except OSError as exc:
            log.error("%s: %s: triggered capture stops", snip["base"], exc.strerror or exc)
            snip["end"] = snip["written"]
            self.max_files = 0
            return
        snip["written"] += len(samples)

    def _close_snippet(self):
        snip, self._snippet = self._snippet, None
        if snip is None:
            return
        snip["file"].close()
        try:
            with open(snip["base"] + ".sigmf-meta", "w") as fh:
                fh.write(self._metadata(snip).dumps(pretty=True) + "\n")
        except OSError as exc:
            log.error("%s: %s: snippet not saved", snip["base"], exc.strerror or exc)
            return
        self.files.append(snip["base"] + ".sigmf-meta")
        self._counts["written"] += 1
        log.info("captured %s (%.2f s)", snip["base"] + ".sigmf-meta",
                 (snip["written"] - snip["start"]) / self.samp_rate)

    def _metadata(self, snip):
        start, n = snip["start"], snip["written"] - snip["start"]
        first = max((i for i, (at, _) in enumerate(self._retunes) if at <= start), default=0)
        captures = [{"core:sample_start": 0, "core:global_index": start,
                     "core:frequency": self._retunes[first][1],
                     "core:datetime": datetime.datetime.fromtimestamp(
                         snip["utc"], datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}]
        captures += [{"core:sample_start": at - start, "core:frequency": f}
                     for at, f in self._retunes[first + 1:] if at < start + n]
        annotations = []
        for d in snip["decisions"]:
            a0 = max(d["sample_start"], start)
            a1 = min(d["sample_start"] + d["sample_count"], start + n)
            ann = annotation_from_decision(d)
            ann.update({"core:sample_start": a0 - start, "core:sample_count": max(0, a1 - a0)})
            annotations.append(ann)
        annotations.sort(key=lambda a: a["core:sample_start"])
        first_d = snip["decisions"][0]
        meta = SigMFFile(metadata={
            "global": {"core:datatype": "cf32_le", "core:sample_rate": self.samp_rate,
                       "core:recorder": "gr-spectrumfm triggered_capture",
                       "core:description": f"triggered by {self.trigger.expression}: "
                                           f"{first_d['task']} {first_d['label']} "
                                           f"score {first_d['score']:.2f}",
                       "core:extensions": [dict(EXTENSION)]},
            "captures": captures, "annotations": annotations})
        meta.validate()
        return meta

    def stop(self):
        with self._lock:
            self._close_snippet()
        return True

    def stats(self):
        """matched (decisions), written (snippets), skipped (over max_files)."""
        with self._lock:
            return dict(self._counts)
