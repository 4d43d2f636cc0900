"""Reading the dates an English query names (no language model) and how near a turn's
date is to them, for the whole-scope ranker's date boost."""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_MON = "|".join([*_MONTHS, *(m[:3] for m in _MONTHS if len(m) > 3), "sept"])
_DAY_FIRST = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MON})\.?,?\s+(\d{{4}})\b", re.I)
_MONTH_FIRST = re.compile(rf"\b({_MON})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b",
                          re.I)
_MONTH_YEAR = re.compile(rf"\b({_MON})\.?,?\s+(\d{{4}})\b", re.I)
_MONTH = re.compile(rf"\b({_MON})\b", re.I)
_YEAR = re.compile(r"\b(19\d\d|20\d\d)\b")
ANY_DATE = re.compile(rf"{_MONTH.pattern}|{_YEAR.pattern}", re.I)
_DAY_SECONDS = 86400.0


def _month_number(name: str) -> int:
    name = name.lower().rstrip(".")[:3]
    return next(i for i, m in enumerate(_MONTHS, 1) if m.startswith(name))


def day_number(d: datetime) -> float:
    """Days since 1970-01-01 (UTC; a naive datetime is taken as UTC)."""
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp() / _DAY_SECONDS


def query_dates(query: str, years: Sequence[int]) -> list[tuple[float, float]]:
    """The dates a query names, as day intervals (days since 1970, inclusive): a day
    ("on 8 May, 2023", "May 8th, 2023"), a month of a year ("in June 2023"), a month alone
    ("in June": that month of each of ``years``, the years the scope spans) or a year.
    "May" alone is not read as a month (it is also a verb). No language model, English only.
    """
    out: list[tuple[float, float]] = []
    taken: list[tuple[int, int]] = []

    def add(y: int, m: int | None, d: int | None, span: tuple[int, int]) -> None:
        try:
            if m is not None and d is not None:
                lo = hi = day_number(datetime(y, m, d, tzinfo=UTC))
            elif m is not None:
                lo = day_number(datetime(y, m, 1, tzinfo=UTC))
                hi = day_number(datetime(y, m, calendar.monthrange(y, m)[1], tzinfo=UTC))
            else:
                lo = day_number(datetime(y, 1, 1, tzinfo=UTC))
                hi = day_number(datetime(y, 12, 31, tzinfo=UTC))
        except ValueError:  # 31 February and the like
            return
        out.append((lo, hi))
        taken.append(span)

    def free(span: tuple[int, int]) -> bool:
        return all(span[1] <= a or span[0] >= b for a, b in taken)

    for m in _DAY_FIRST.finditer(query):
        add(int(m.group(3)), _month_number(m.group(2)), int(m.group(1)), m.span())
    for m in _MONTH_FIRST.finditer(query):
        if free(m.span()):
            add(int(m.group(3)), _month_number(m.group(1)), int(m.group(2)), m.span())
    for m in _MONTH_YEAR.finditer(query):
        if free(m.span()):
            add(int(m.group(2)), _month_number(m.group(1)), None, m.span())
    for m in _MONTH.finditer(query):
        if free(m.span()) and m.group(1).lower() != "may":
            for y in years:
                add(int(y), _month_number(m.group(1)), None, m.span())
    for m in _YEAR.finditer(query):
        if free(m.span()):
            add(int(m.group(1)), None, None, m.span())
    return out


def date_match(days: np.ndarray, intervals: Sequence[tuple[float, float]], tau: float
               ) -> np.ndarray:
    """Per date (in days), exp(-distance / tau) to the nearest interval (1 inside one)."""
    if not intervals or len(days) == 0:
        return np.zeros(len(days))
    dist = np.full(len(days), np.inf)
    for lo, hi in intervals:
        dist = np.minimum(dist, np.maximum(0.0, np.maximum(lo - days, days - hi)))
    return np.exp(-dist / max(tau, 1e-9))
