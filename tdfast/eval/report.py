"""Number formatting shared by the QVHighlights and Charades reports."""
from __future__ import annotations

import sys

import numpy as np


def percent(fraction: float) -> float | None:
    """A fraction as a percentage rounded to 2 decimals, the official way (via a '.2f' string).

    NaN (a mean over no query) becomes None, written as JSON null.
    """
    if np.isnan(fraction):
        return None
    return float(f"{100 * fraction:.2f}")


def query_mean(per_query: np.ndarray) -> np.ndarray:
    """Mean over the query axis (axis 0) of [Q, ...]; NaN when there is no query."""
    if len(per_query) == 0:
        return np.full(per_query.shape[1:], np.nan)
    return per_query.mean(axis=0)


def by_threshold(means: np.ndarray, thresholds: list[float]) -> dict[str, float | None]:
    """Per-threshold means [T] -> {str(threshold): percent}, the official keys ('0.5', '0.55', ...)."""
    return {str(t): percent(m) for t, m in zip(thresholds, means)}


def log(verbose: bool, message: str) -> None:
    """Progress notes go to stderr, so stdout stays the metrics JSON."""
    if verbose:
        print(message, file=sys.stderr)
