"""Records complex baseband to a SigMF recording, with decisions as annotations."""

import bisect
import datetime
import errno
import logging
import math
import os
import threading
import time

import numpy as np
import pmt
from gnuradio import gr
from sigmf import SigMFFile

from spectrumfm import schema
from spectrumfm.errors import InputError

from .pmtutil import GAP, RX_FREQ, RX_RATE, RX_TIME, pmt_to_dict

log = logging.getLogger("spectrumfm.sigmf_recorder")

PORT_ANNOTATIONS = pmt.intern("annotations")
EXTENSION = {"name": "spectrumfm", "version": "1.0.0", "optional": True}
META_INTERVAL_S = 2.0
SAMPLE_BYTES = 8  # cf32_le
LABEL_CHARS = 20  # SigMF recommends core:label of at most 20 characters


def sigmf_paths(path):
    """``(data_path, meta_path)`` for a ``.sigmf-meta``, ``.sigmf-data`` or base path."""
    base = os.fspath(path)
    for ext in (".sigmf-meta", ".sigmf-data"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    if not os.path.basename(base):
        raise InputError(f"{path!r}: not a recording path (expected NAME.sigmf-meta)")
    if base.endswith(".sigmf"):
        raise InputError(f"{path}: a .sigmf archive cannot be written while recording; "
                         "give NAME.sigmf-meta")
    return base + ".sigmf-data", base + ".sigmf-meta"


def _iso8601(seconds):
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def annotation_from_decision(decision):
    """A SigMF annotation for a schema-v1 decision (core fields plus ``spectrumfm:``)."""
    label = decision["label"]
    ann = {
        "core:sample_start": decision["sample_start"],
        "core:sample_count": decision["sample_count"],
        "core:freq_lower_edge": float(decision["freq_lo"]),
        "core:freq_upper_edge": float(decision["freq_hi"]),
        "core:label": label[:LABEL_CHARS],
        "core:generator": decision["model"],
        "core:comment": decision["task"],
        "spectrumfm:task": decision["task"],
        "spectrumfm:score": float(decision["score"]),
    }
    if len(label) > LABEL_CHARS:
        ann["spectrumfm:label"] = label
    snr = decision.get("snr_db")
    if isinstance(snr, (int, float)) and not isinstance(snr, bool) and math.isfinite(snr):
        ann["spectrumfm:snr_db"] = float(snr)
    return ann


class sigmf_recorder(gr.sync_block):
    """Writes the stream to ``NAME.sigmf-data`` (cf32_le) and ``NAME.sigmf-meta``.

    The metadata is valid SigMF at every moment: written atomically (temporary file, then
    rename) at construction, at start, every ~2 s while it changes (in a thread: work()
    never waits for it) and at stop, and only about samples already in the data file, so
    a crash, a kill or a full disk leaves a recording that opens and validates.

    Captures: one at sample 0 with ``core:frequency`` and ``core:datetime`` (UTC at start, or
    from an ``rx_time`` tag), and a new segment at the absolute sample where an ``rx_freq``
    tag changes the frequency or an ``rx_time`` tag sets the time. SigMF has one global
    sample rate: an ``rx_rate`` tag on sample 0 sets it; a later change opens a segment with
    ``spectrumfm:sample_rate`` and a warning. A ``spectrumfm_gap`` tag (samples lost
    upstream: an overflow, a dropped connection) opens a segment whose ``core:global_index``
    counts the lost samples (or, when their number is unknown, a ``core:comment`` says so).

    Annotations come from decisions: ``core:label`` (the decision's label, at most 20
    characters; the full one in ``spectrumfm:label`` when longer), ``core:generator`` (the
    model), ``core:comment`` (the task), band edges, and the declared extension
    ``spectrumfm`` (v1.0.0, optional) with ``spectrumfm:task``, ``spectrumfm:score`` and
    ``spectrumfm:snr_db`` when the decision has one. Vacant occupancy decisions (task
    ``occupancy``, label ``vacant``) and normal anomaly decisions (task ``anomaly``, label
    ``normal``: a model's per-channel verdict) are not annotated: one per slot would swamp
    the file, and the absence of ``occupied``/``anomalous`` says the same; they are counted
    (``vacant_skipped``, ``normal_skipped``).

    A write error on the data (a full disk) logs one error line, truncates the data to the
    last whole sample, rewrites the metadata for exactly those samples and stops
    recording; the block keeps consuming its input so the flowgraph runs on.

    Ports:
        in0: complex64 samples, tags ``rx_freq``, ``rx_rate`` (pmt double, Hz),
            ``rx_time`` (pmt tuple of uint64 s, double s, UTC) and ``spectrumfm_gap``
            (pmt uint64, samples lost).
        annotations (message in, optional): schema-v1 decisions as PMT dicts; others are
            counted as ``malformed`` and skipped.

    Args:
        path: ``NAME.sigmf-meta``, ``NAME.sigmf-data`` or ``NAME``.
        samp_rate: sample rate in Hz (``core:sample_rate``).
        center_freq: centre frequency in Hz, until an ``rx_freq`` tag says otherwise.
        description, author: ``core:description`` and ``core:author`` (left out if empty).
        generator: ``core:recorder``, the software that made the recording.

    Raises InputError naming the path when it cannot be written.
    """

    def __init__(self, path, samp_rate, center_freq=0.0, description="", author="",
                 generator="gr-spectrumfm"):
        if not float(samp_rate) > 0:
            raise InputError(f"samp_rate: must be positive, got {samp_rate}")
        gr.sync_block.__init__(self, name="spectrumfm_sigmf_recorder",
                               in_sig=[np.complex64], out_sig=None)
        self.data_path, self.meta_path = sigmf_paths(path)
        self._global = {"core:datatype": "cf32_le", "core:sample_rate": float(samp_rate),
                        "core:recorder": str(generator), "core:extensions": [dict(EXTENSION)]}
        if description:
            self._global["core:description"] = str(description)
        if author:
            self._global["core:author"] = str(author)
        self._freq = float(center_freq)
        self._rate = float(samp_rate)
        self._captures = [{"core:sample_start": 0, "core:frequency": self._freq,
                           "core:datetime": _iso8601(time.time())}]
        self._time_from_tag = False
        self._annotations = []  # sorted by core:sample_start
        self._counts = {"samples_written": 0, "vacant_skipped": 0, "normal_skipped": 0,
                        "malformed": 0, "gaps": 0}
        self._lost = 0  # samples lost upstream so far (spectrumfm_gap tags)
        self._bytes = 0
        self.stopped_reason = None
        self._lock = threading.Lock()  # state shared with the metadata thread
        self._meta_lock = threading.Lock()  # one metadata write at a time
        self._changed = False  # since the metadata was last built (under _lock)
        self._wake = threading.Event()  # a change, or stop: wakes the metadata thread
        self._stopping = threading.Event()
        self._thread = None
        self._meta_error_logged = False
        try:
            self._data = open(self.data_path, "wb", buffering=0)
        except OSError as exc:
            raise InputError(f"{self.data_path}: {exc.strerror or exc}") from None
        try:
            self._write_meta()
        except OSError as exc:
            self._data.close()
            raise InputError(f"{self.meta_path}: {exc.strerror or exc}") from None
        self.message_port_register_in(PORT_ANNOTATIONS)
        self.set_msg_handler(PORT_ANNOTATIONS, self._on_annotation)

    # --- scheduler hooks --------------------------------------------------------------

    def start(self):
        if not self._time_from_tag:  # closer to the first sample than construction time
            self._set_capture(0, {"core:datetime": _iso8601(time.time())})
        self._stopping.clear()
        self._thread = threading.Thread(target=self._meta_loop, daemon=True,
                                        name="spectrumfm-sigmf-meta")
        self._thread.start()
        return True

    def stop(self):
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._data is not None:
            self._data.close()
            self._data = None
            self.stopped_reason = self.stopped_reason or "stopped"
        if self._changed:
            self._save_meta()
        return True

    def work(self, input_items, output_items):
        samples = input_items[0]
        if self._data is not None:  # after a write error: consume, so the stream runs on
            for tag in sorted(self.get_tags_in_window(0, 0, len(samples)),
                              key=lambda t: t.offset):
                self._on_tag(tag)
            self._write_samples(samples)
        return len(samples)

    # --- data -------------------------------------------------------------------------

    def _write_samples(self, samples):
        buf = memoryview(np.ascontiguousarray(samples, dtype="<c8")).cast("B")
        done = 0
        try:
            while done < len(buf):  # a raw write may take only part of the buffer
                done += self._data.write(buf[done:])
        except OSError as exc:
            self._fail(exc, self._bytes + done)
            return
        self._set_length(self._bytes + done)

    def _fail(self, exc, nbytes):
        self.stopped_reason = exc.strerror or str(exc)
        log.error("%s: %s: recording stopped, stream continues", self.data_path,
                  self.stopped_reason)
        self._meta_error_logged = True  # this line says it all; a full disk fails both files
        whole = nbytes - nbytes % SAMPLE_BYTES
        try:  # a partial sample at the end would make the data file invalid
            self._data.truncate(whole)
        except OSError:
            pass  # the metadata below still describes only the whole samples
        self._data.close()
        self._data = None
        self._set_length(whole)
        try:
            self._write_meta()
        except OSError as meta_exc:
            if meta_exc.errno != errno.ENOSPC:
                return  # the last metadata written stays valid: it describes fewer samples
            # Give back the last few samples so the metadata fits; better than losing the
            # annotations written since the last metadata write.
            room = (len(self._meta_text()) // 4096 + 2) * 4096
            self._set_length(max(0, whole - room))
            try:
                os.truncate(self.data_path, self._bytes)
                self._write_meta()
                log.info("%s: dropped the last %d bytes to make room for the metadata",
                         self.data_path, whole - self._bytes)
            except OSError:
                pass

    def _set_length(self, nbytes):
        self._bytes = nbytes
        with self._lock:
            self._counts["samples_written"] = nbytes // SAMPLE_BYTES

    # --- tags and decisions -----------------------------------------------------------

    def _set_capture(self, index, fields):
        """Update the capture starting at ``index``, opening one (current frequency) if new."""
        with self._lock:
            for cap in self._captures:
                if cap["core:sample_start"] == index:
                    break
            else:
                cap = {"core:sample_start": index, "core:frequency": self._freq}
                bisect.insort(self._captures, cap, key=lambda c: c["core:sample_start"])
            cap.update(fields)
            self._changed = True
        self._wake.set()

    def _on_tag(self, tag):
        try:
            if pmt.eq(tag.key, RX_FREQ):
                freq = pmt.to_double(tag.value)
                if math.isfinite(freq) and freq != self._freq:
                    self._freq = freq
                    self._set_capture(tag.offset, {"core:frequency": freq})
            elif pmt.eq(tag.key, RX_RATE):
                rate = pmt.to_double(tag.value)
                if not (math.isfinite(rate) and rate > 0) or rate == self._rate:
                    return
                self._rate = rate
                if tag.offset == 0:
                    with self._lock:
                        self._global["core:sample_rate"] = rate
                        self._changed = True
                    self._wake.set()
                else:
                    log.warning("%s: sample rate changed to %g Hz at sample %d; SigMF has one "
                                "rate, the segment says spectrumfm:sample_rate",
                                self.meta_path, rate, tag.offset)
                    self._set_capture(tag.offset, {"spectrumfm:sample_rate": rate})
            elif pmt.eq(tag.key, GAP):
                self._on_gap(tag)
            elif pmt.eq(tag.key, RX_TIME):
                secs = (pmt.to_uint64(pmt.tuple_ref(tag.value, 0))
                        + pmt.to_double(pmt.tuple_ref(tag.value, 1)))
                self._set_capture(tag.offset, {"core:datetime": _iso8601(secs)})
                self._time_from_tag = self._time_from_tag or tag.offset == 0
        except (RuntimeError, ValueError, TypeError, OverflowError, OSError):
            log.debug("ignored a %s tag of the wrong type", pmt.symbol_to_string(tag.key))

    def _on_gap(self, tag):
        lost = pmt.to_uint64(tag.value) if pmt.is_uint64(tag.value) else 0
        self._lost += lost
        with self._lock:
            self._counts["gaps"] += 1
        # core:global_index: where this segment sits in the stream the radio produced.
        self._set_capture(tag.offset, {"core:global_index": tag.offset + self._lost} if lost
                          else {"core:comment": "samples were lost before this segment"})

    def _on_annotation(self, msg):
        decision = pmt_to_dict(msg)
        try:
            if decision is None:
                raise schema.SchemaError("not a dict")
            schema.validate_decision(decision)
        except schema.SchemaError as exc:
            with self._lock:
                self._counts["malformed"] += 1
                first = self._counts["malformed"] == 1
            log.log(logging.WARNING if first else logging.DEBUG,  # no flood of warnings
                    "annotations: skipped a malformed decision (%s); further ones are only "
                    "counted", exc)
            return
        with self._lock:
            if decision["task"] == "occupancy" and decision["label"] == "vacant":
                self._counts["vacant_skipped"] += 1
                return
            if decision["task"] == "anomaly" and decision["label"] == "normal":
                self._counts["normal_skipped"] += 1
                return
            bisect.insort(self._annotations, annotation_from_decision(decision),
                          key=lambda a: a["core:sample_start"])
            self._changed = True
        self._wake.set()

    # --- metadata ---------------------------------------------------------------------

    def _meta_text(self):
        """Valid SigMF metadata for exactly the samples written so far."""
        with self._lock:
            n = self._counts["samples_written"]
            captures = [dict(c) for c in self._captures
                        if c["core:sample_start"] < n or c["core:sample_start"] == 0]
            end = bisect.bisect_left(self._annotations, n, key=lambda a: a["core:sample_start"])
            annotations = self._annotations[:end]
            meta_global = dict(self._global)
            clipped = []
            for ann in annotations:  # an annotation may reach past the last sample written
                if ann["core:sample_start"] + ann["core:sample_count"] > n:
                    ann = {**ann, "core:sample_count": n - ann["core:sample_start"]}
                clipped.append(ann)
            # What is left out now belongs in a later write, once its samples are in the
            # file; after a write error no more samples come.
            self._changed = self._data is not None and (
                len(captures) < len(self._captures) or end < len(self._annotations)
                or any(a is not b for a, b in zip(clipped, annotations)))
        meta = SigMFFile(metadata={"global": meta_global, "captures": captures,
                                   "annotations": clipped})
        meta.validate()
        return meta.dumps(pretty=True) + "\n"

    def _write_meta(self):
        """Write the metadata atomically: a reader sees the old file or the new, never half."""
        with self._meta_lock:
            text = self._meta_text().encode()
            tmp = self.meta_path + ".tmp"
            try:
                with open(tmp, "wb") as fp:
                    fp.write(text)
                    fp.flush()
                    os.fsync(fp.fileno())  # the rename must not outrun the contents
                os.replace(tmp, self.meta_path)
            except OSError:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

    def _save_meta(self):
        """_write_meta for the running recorder: an error is logged once, then retried."""
        try:
            self._write_meta()
        except OSError as exc:
            with self._lock:
                self._changed = True  # retried at the next interval
            if not self._meta_error_logged:  # a warning: the old file stays valid, and
                self._meta_error_logged = True  # the write is retried
                log.warning("%s: %s: annotations since the last write are not saved yet",
                            self.meta_path, exc.strerror or exc)

    def _meta_loop(self):
        # At most every META_INTERVAL_S, and never more than ~20 % of the time: building
        # and validating a long annotation list costs about 80 us per annotation.
        # The timeout also picks up what waited for its samples (see _meta_text).
        while not self._stopping.is_set():
            self._wake.wait(META_INTERVAL_S)
            self._wake.clear()
            if self._changed and not self._stopping.is_set():
                began = time.monotonic()
                self._save_meta()
                spent = time.monotonic() - began
                self._stopping.wait(max(META_INTERVAL_S, 4 * spent) - spent)

    def stats(self):
        """samples_written, annotations, captures, gaps, vacant_skipped, normal_skipped,
        malformed, stopped_reason."""
        with self._lock:
            return {**self._counts, "annotations": len(self._annotations),
                    "captures": len(self._captures), "stopped_reason": self.stopped_reason}
