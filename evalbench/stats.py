"""Summary statistics of repeated measurements: mean, spread and a 95% confidence interval."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 95% Student t quantiles by degrees of freedom.
_T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 60: 2.000, 120: 1.980,
}  # fmt: skip


def t95(dof: int) -> float:
    """The 95% two-sided t quantile for ``dof`` degrees of freedom (the tabled dof at or below it: conservative)."""
    if dof < 1:
        return math.nan
    return _T95[max(d for d in _T95 if d <= dof)]


@dataclass(frozen=True)
class SampleStats:
    """Mean, standard deviation, coefficient of variation and 95% t-interval of the mean of ``n`` samples."""

    mean: float
    std: float
    cv: float
    ci_low: float
    ci_high: float
    n: int

    def fields(self, name: str) -> dict[str, float]:
        """Record columns: ``name`` (the mean), ``name_std``, ``name_cv``, ``name_ci_low``, ``name_ci_high``."""
        return {
            name: self.mean,
            f"{name}_std": self.std,
            f"{name}_cv": self.cv,
            f"{name}_ci_low": self.ci_low,
            f"{name}_ci_high": self.ci_high,
        }


def sample_stats(values: list[float]) -> SampleStats:
    """Statistics of ``values``; with one sample the spread and the interval are unknown (NaN)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return SampleStats(mean, math.nan, math.nan, math.nan, math.nan, n)
    std = statistics.stdev(values)
    half = t95(n - 1) * std / math.sqrt(n)
    return SampleStats(mean, std, std / abs(mean) if mean else math.nan, mean - half, mean + half, n)
