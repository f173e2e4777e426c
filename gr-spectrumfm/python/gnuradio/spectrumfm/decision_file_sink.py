"""Writes decisions to a JSON Lines file (``spectrumfm run --decisions FILE.jsonl``)."""

import logging
import os
import threading

from gnuradio import gr

from spectrumfm import schema
from spectrumfm.errors import InputError

from .pmtutil import PORT_DECISIONS, pmt_to_dict

log = logging.getLogger("spectrumfm.decision_file_sink")


class decision_file_sink(gr.basic_block):
    """One schema-v1 decision per line, as JSON (``schema.decision_to_json``).

    Each line goes to the operating system with one unbuffered write as the decision
    arrives, so a crash of the process loses nothing already received, and the file is
    always whole lines that each parse and validate (``docs/messages.md``). An existing
    file is replaced.

    Ports:
        decisions (message in): schema-v1 decisions as PMT dicts (or JSON text in a symbol
            or u8 vector). Anything that does not validate is counted (``malformed``) and
            skipped; the first one is logged as a warning.

    Args:
        path: the file to write.

    A write error (a full disk) logs one error line, cuts the file back to its last whole
    line and stops writing; the block stays alive and keeps counting. Raises InputError
    naming the path when it cannot be opened for writing.
    """

    def __init__(self, path):
        gr.basic_block.__init__(self, name="spectrumfm_decision_file_sink",
                                in_sig=None, out_sig=None)
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "wb", buffering=0)
        except OSError as exc:
            raise InputError(f"{self.path}: {exc.strerror or exc}") from None
        self._bytes = 0  # end of the last whole line
        self._counts = {"written": 0, "malformed": 0, "not_written": 0}
        self.stopped_reason = None
        self._lock = threading.Lock()  # stop() runs outside the block's thread
        self.message_port_register_in(PORT_DECISIONS)
        self.set_msg_handler(PORT_DECISIONS, self._on_decision)

    def _on_decision(self, msg):
        decision = pmt_to_dict(msg)
        try:
            if decision is None:
                raise schema.SchemaError("not a dict")
            schema.validate_decision(decision)
            # Extra fields may still refuse JSON (NaN, a PMT vector): check before writing.
            line = (schema.decision_to_json(decision) + "\n").encode()
        except (schema.SchemaError, ValueError, TypeError) as exc:
            self._counts["malformed"] += 1
            log.log(logging.WARNING if self._counts["malformed"] == 1 else logging.DEBUG,
                    "%s: skipped a malformed decision (%s); further ones are only counted",
                    self.path, exc)
            return
        with self._lock:
            if self._file is None:
                self._counts["not_written"] += 1
                return
            done = 0
            try:
                while done < len(line):  # a raw write may take only part of the buffer
                    done += self._file.write(line[done:])
            except OSError as exc:
                self._fail(exc)
                return
            self._bytes += done
            self._counts["written"] += 1

    def _fail(self, exc):
        self.stopped_reason = exc.strerror or str(exc)
        log.error("%s: %s: decisions are no longer written, stream continues",
                  self.path, self.stopped_reason)
        self._counts["not_written"] += 1
        try:  # a half line would break every JSONL reader on the last line
            self._file.truncate(self._bytes)
        except OSError:
            pass
        self._file.close()
        self._file = None

    def stop(self):
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
                self.stopped_reason = "stopped"
        return True

    def stats(self):
        """written, malformed, not_written (after a write error), stopped_reason."""
        return {**self._counts, "stopped_reason": self.stopped_reason}
