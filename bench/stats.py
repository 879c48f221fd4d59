"""Summary statistics for benchmark samples: count, median, p95, min, max, ratio, slope.

Pure functions over lists of floats, so they are unit tested and every figure in a report
is computed the same way. p95 uses linear interpolation between closest ranks (the
"R-7"/numpy default), so p95 of few samples is honest about being close to the max.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def _clean(values: Iterable[float | int | None]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return sorted(out)


def quantile(values: Iterable[float | int | None], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between closest ranks; None if empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within 0..1, got {q}")
    xs = _clean(values)
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Iterable[float | int | None]) -> float | None:
    return quantile(values, 0.5)


def p95(values: Iterable[float | int | None]) -> float | None:
    return quantile(values, 0.95)


def summary(values: Iterable[float | int | None], digits: int = 4) -> dict[str, Any]:
    """{n, median, p95, min, max, mean} of the finite values (None entries when empty)."""
    xs = _clean(values)
    if not xs:
        return {"n": 0, "median": None, "p95": None, "min": None, "max": None, "mean": None}

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "n": len(xs),
        "median": r(median(xs)),
        "p95": r(p95(xs)),
        "min": r(xs[0]),
        "max": r(xs[-1]),
        "mean": r(sum(xs) / len(xs)),
    }


def ratio(numerator: float | None, denominator: float | None, digits: int = 4) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, digits)


def success_ratio(successes: int, attempts: int, digits: int = 4) -> float | None:
    if attempts <= 0:
        return None
    if not 0 <= successes <= attempts:
        raise ValueError(f"successes {successes} not within 0..{attempts}")
    return round(successes / attempts, digits)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float | None]:
    """Least-squares line y = intercept + slope * x, with r^2; Nones for < 2 distinct xs."""
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length ({len(xs)} != {len(ys)})")
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return {"slope": None, "intercept": None, "r2": None, "n": float(n)}
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2, "n": float(n)}


def growth_exponent(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """b in y ~ a * x^b (log-log least squares): 1 is linear growth, 2 quadratic."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    fit = linear_fit([p[0] for p in pts], [p[1] for p in pts])
    return fit["slope"]
