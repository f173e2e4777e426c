"""Conditions on decisions, for triggered capture (``spectrumfm run --capture-on EXPR``).

An expression is terms separated by commas; ``;`` separates alternatives (as does giving
``--capture-on`` more than once). A term is ``NAME OP VALUE`` with OP one of
``= != > >= < <=``:

- NAME a decision field (``task``, ``label``, ``score``, ``freq_lo``, ``freq_hi``,
  ``center_freq``, ``samp_rate``, ``snr_db``, ``model``, ...): a condition every matching
  decision meets (comma = AND). ``=``/``!=`` on text ignore case.
- NAME a task (``occupancy``, ``emission``, ``anomaly``, ``technology``, ``modulation``):
  shorthand for that task and its label (``technology=LTE``) or its score (``anomaly>0.8``).
  A decision has one task, so task terms are alternatives: the decision must meet one of them.

Examples: ``task=occupancy,score>0.8``; ``label=LTE``; ``technology=lte,anomaly>0.8`` (LTE
or an anomaly score above 0.8); ``emission>0.9,snr_db>=10,freq_lo>433e6``.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from .schema import DECISION_FIELDS, TASKS

OPS = {"=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
       "<": operator.lt, "<=": operator.le}
TEXT_FIELDS = ("task", "label", "model")
FIELDS = tuple(DECISION_FIELDS) + ("snr_db", "noise_floor_db")
_TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|>=|<=|=|>|<)\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: object

    def matches(self, decision: dict) -> bool:
        have = decision.get(self.field)
        if have is None:
            return False
        if self.field in TEXT_FIELDS:
            return OPS[self.op](str(have).lower(), self.value)
        if isinstance(have, bool) or not isinstance(have, (int, float)):
            return False
        return OPS[self.op](float(have), self.value)


@dataclass(frozen=True)
class Alternative:
    """Every condition, and one of the task terms (when there are any)."""

    conditions: tuple
    tasks: tuple        # each a tuple of Terms (task=..., then label or score)

    def matches(self, decision: dict) -> bool:
        if not all(t.matches(decision) for t in self.conditions):
            return False
        return not self.tasks or any(all(t.matches(decision) for t in group)
                                     for group in self.tasks)


class Trigger:
    """A parsed expression; ``matches(decision)`` is True when any alternative matches."""

    def __init__(self, expression: str):
        self.expression = str(expression)
        parts = [p for p in self.expression.split(";") if p.strip()]
        if not parts:
            raise ValueError("empty expression")
        self.alternatives = tuple(_parse_alternative(p) for p in parts)

    def matches(self, decision: dict) -> bool:
        return any(a.matches(decision) for a in self.alternatives)

    def __repr__(self):
        return f"Trigger({self.expression!r})"


def _parse_alternative(text):
    conditions, tasks = [], []
    for raw in text.split(","):
        if not raw.strip():
            raise ValueError(f"empty term in {text.strip()!r}")
        m = _TERM.match(raw)
        if not m:
            raise ValueError(f"{raw.strip()!r} is not NAME OP VALUE (OP one of "
                             f"{' '.join(OPS)})")
        name, op, value = m.groups()
        if name in TASKS:
            tasks.append(_task_term(name, op, value))
        elif name in FIELDS:
            conditions.append(_term(name, op, value))
        else:
            raise ValueError(f"unknown name {name!r}; use a decision field "
                             f"({', '.join(FIELDS)}) or a task ({', '.join(TASKS)})")
    return Alternative(tuple(conditions), tuple(tasks))


def _task_term(task, op, value):
    """``technology=LTE`` -> (task=technology, label=lte); ``anomaly>0.8`` -> score."""
    try:
        score = float(value)
    except ValueError:
        score = None
    if score is None:
        if op not in ("=", "!="):
            raise ValueError(f"{task}{op}{value}: compare a task with a label (= or !=) "
                             f"or with a score (a number)")
        return (Term("task", "=", task), Term("label", op, value.lower()))
    return (Term("task", "=", task), _term("score", op, value))


def _term(name, op, value):
    if name in TEXT_FIELDS:
        if op not in ("=", "!="):
            raise ValueError(f"{name}{op}{value}: {name} is text; use = or !=")
        return Term(name, op, value.lower())
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}{op}{value}: {name} is a number, {value!r} is not") from None
    return Term(name, op, number)
