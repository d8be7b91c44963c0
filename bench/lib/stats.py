"""Order statistics the bench reports: the one percentile definition, medians, per-round ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def percentile(values: Iterable[float], pct: float, empty: float = math.nan) -> float:
    """The ``pct`` percentile (0-100) of ``values``, by rank, the way wrk computes its own.

    The value at rank floor(pct/100 x N) + 1 of the N values sorted (1-based, at most N): the
    smallest value with more than ``pct`` % of the values at or below it. It is the textbook
    nearest rank (ceil(pct/100 x N)) except where pct/100 x N is whole, where it takes the
    next value: p50 of 1, 2, 3, 4 is 3, p99 of 100 values is the largest, p0 the smallest.
    wrk's ``latency:percentile()`` (bench/wrk/rotate.lua, the p50-p999 of bench/run.py) uses
    this rank, so its figures, bench/loadgen.py's and the soaks' are read the same way.
    ``empty`` is the answer for no values (NaN unless the caller needs a number).
    """
    ordered = sorted(values)
    if not ordered:
        return empty
    # round() first: pct x N / 100 in floats can land a hair below a whole number.
    rank = math.floor(round(pct * len(ordered) / 100, 9)) + 1
    return ordered[min(len(ordered), max(1, rank)) - 1]


def median(values: Iterable[float], digits: int | None = None) -> float:
    """The median (the mean of the middle two for an even count), rounded to ``digits`` if given."""
    found = statistics.median(list(values))
    return found if digits is None else round(found, digits)


def paired_ratio(a: Iterable[float], b: Iterable[float]) -> float:
    """The median over rounds of a/b, each pair measured in the same round, seconds apart.

    The VM's speed drifts between rounds (one app's req/s moved by up to 1.6x across the
    rounds of one run), and both cells of a round see the same drift; a ratio of the two
    medians would mix rounds of different speeds. The reports print both.
    """
    return statistics.median(x / y for x, y in zip(a, b, strict=True))
