"""What a handful of seeds can say: means with 95% intervals, and whether two cells differ."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """One cell's test score over its seeds."""

    values: tuple[float, ...]
    mean: float
    sd: float | None  # None for a single run
    ci95: float | None  # half-width of the 95% t-interval of the mean; None for a single run

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


def summarise(values: Iterable[float]) -> Summary:
    values = tuple(values)
    if len(values) < 2:
        return Summary(values, statistics.fmean(values), None, None)
    sd = statistics.stdev(values)
    t = stats.t.ppf((1 + CONFIDENCE) / 2, df=len(values) - 1)
    return Summary(values, statistics.fmean(values), sd, float(t * sd / math.sqrt(len(values))))


@dataclass(frozen=True)
class Difference:
    """Mean of `a` minus mean of `b` over their seeds, by Welch's t-test (unequal spreads)."""

    a: str
    b: str
    delta: float
    low: float | None  # the 95% interval of the difference; None when it cannot be estimated
    high: float | None
    p_value: float | None

    @property
    def beyond_spread(self) -> bool:
        """The interval excludes zero: the seeds' spread does not explain the difference."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def difference(a: str, a_values: Iterable[float], b: str, b_values: Iterable[float]) -> Difference:
    x, y = tuple(a_values), tuple(b_values)
    delta = statistics.fmean(x) - statistics.fmean(y)
    if len(x) < 2 or len(y) < 2:
        return Difference(a, b, delta, None, None, None)
    vx, vy = statistics.variance(x) / len(x), statistics.variance(y) / len(y)
    if vx + vy == 0:
        # Every seed of each scored the same (often 100%): no spread, so any gap is real.
        return Difference(a, b, delta, delta, delta, 1.0 if delta == 0 else 0.0)
    # Welch-Satterthwaite degrees of freedom.
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, df) * math.sqrt(vx + vy))
    p_value = float(2 * stats.t.sf(abs(delta) / math.sqrt(vx + vy), df))
    return Difference(a, b, delta, delta - half, delta + half, p_value)
