"""The `spectrumfm` command: one entry point, a subcommand per job.

Errors a user can cause (a missing file, a bad parameter) print one line naming the input
and the problem, and exit 2; ``--debug`` shows the traceback of anything unexpected.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from spectrumfm import __version__
from spectrumfm.errors import InputError

EXIT_INPUT = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE


class _OneLine(logging.Formatter):
    def format(self, record):
        return f"spectrumfm: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    log = logging.getLogger("spectrumfm")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def build_parser() -> argparse.ArgumentParser:
    from . import (benchmark, classify, dashboard, demo, devices, evaluate, finetune, generate,
                   pretrain, run)

    parser = argparse.ArgumentParser(
        prog="spectrumfm",
        description="Watch the radio spectrum with foundation models (GNU Radio 3.10).")
    parser.add_argument("--version", action="version", version=f"spectrumfm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run.add_parser(sub)
    devices.add_parser(sub)
    demo.add_parser(sub)
    generate.add_parser(sub)
    pretrain.add_parser(sub)
    finetune.add_parser(sub)
    evaluate.add_parser(sub)
    classify.add_parser(sub)
    benchmark.add_parser(sub)
    dashboard.add_parser(sub)
    return parser


# Options whose value may start with a minus sign ("--snr-range -10,20"): argparse would take
# the value for an option of its own, so they are joined as "--snr-range=-10,20" first.
_SIGNED_VALUES = ("--snr-range",)


def _join_signed_values(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _SIGNED_VALUES and i + 1 < len(argv) and re.match(r"-[\d.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_signed_values(list(sys.argv[1:] if argv is None else argv)))
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"spectrumfm: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # the last guard: one line, unless asked for the traceback
        if args.debug:
            raise
        print(f"spectrumfm: internal error: {type(exc).__name__}: {exc} "
              f"(run with --debug for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL
