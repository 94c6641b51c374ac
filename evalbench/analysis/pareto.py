"""The Pareto front: configurations no other configuration beats on every objective."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evalbench.analysis.objectives import (
    GROUP_COLUMNS,
    check_columns,
    higher_is_better,
    successful,
    with_objectives,
)


def non_dominated(values: np.ndarray) -> np.ndarray:
    """Mask of rows of ``values`` (all objectives minimized, no NaN) that no other row dominates.

    Row a dominates row b when a <= b everywhere and a < b somewhere; equal rows do not
    dominate each other, so ties stay on the front together.
    """
    n = len(values)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = (values <= values[i]).all(axis=1)
        better = (values < values[i]).any(axis=1)
        mask[i] = not (no_worse & better).any()
    return mask


def pareto_front(df: pd.DataFrame, quality: str = "ppl_ratio", cost: str | list[str] = "s_per_token") -> pd.DataFrame:
    """The non-dominated successful runs of each model on each machine.

    ``quality`` and ``cost`` name columns (``cost`` may list several: any number of
    objectives works). Lower is better except for throughput and accuracy columns, which
    are maximized. Rows missing any objective cannot be ranked and are left out.
    """
    objectives = [quality, *([cost] if isinstance(cost, str) else cost)]
    table = with_objectives(successful(df)) if len(df) else df.copy()
    check_columns(table, objectives)
    signs = np.array([-1.0 if higher_is_better(c) else 1.0 for c in objectives])
    keep = []
    for _, group in table.dropna(subset=objectives).groupby(GROUP_COLUMNS, dropna=False):
        values = group[objectives].to_numpy(dtype=float) * signs
        keep.extend(group.index[non_dominated(values)])
    return table.loc[keep].sort_values([*GROUP_COLUMNS, objectives[1]])
