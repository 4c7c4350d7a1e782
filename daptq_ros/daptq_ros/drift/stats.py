"""Confidence intervals for the evidence: means over episodes and success rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class Summary:
    """Mean of a metric over n episodes with its 95 % confidence interval (None when n < 2)."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        """Half the width of the confidence interval."""
        return None if self.ci_high is None else self.ci_high - self.mean

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


def summarize(values: Sequence[float]) -> Summary:
    """Mean and 95 % Student-t interval: mean ± t_{0.975, n-1} s / sqrt(n), s the sample std."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return Summary(mean, None, None, len(x))
    from scipy import stats  # 1 s to import: only when an interval is computed

    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Summary(mean, mean - half, mean + half, len(x))


def success_rate(successes: int, n: int) -> Summary:
    """Success fraction with its 95 % Wilson score interval (well-behaved at 0 % and 100 %).

    p_hat = k/n, centre = (p_hat + z^2/2n) / (1 + z^2/n),
    half = z / (1 + z^2/n) * sqrt(p_hat (1 - p_hat) / n + z^2 / 4n^2).
    """
    if n == 0:
        return Summary(float("nan"), None, None, 0)
    p_hat = successes / n
    denominator = 1.0 + Z_95**2 / n
    centre = (p_hat + Z_95**2 / (2 * n)) / denominator
    half = Z_95 / denominator * math.sqrt(p_hat * (1 - p_hat) / n + Z_95**2 / (4 * n * n))
    return Summary(p_hat, max(0.0, centre - half), min(1.0, centre + half), n)
