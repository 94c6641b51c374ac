"""Pareto front properties (hypothesis) and its grouping by model and machine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalbench import pareto_front
from evalbench.analysis.pareto import non_dominated
from evalbench.errors import EvalbenchError


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool((a <= b).all() and (a < b).any())


points = st.lists(st.lists(st.integers(0, 6) | st.just(float("nan")), min_size=3, max_size=3), min_size=1, max_size=30)


def run(model: str, precision: str, ppl: float, tok_s: float, rss: float = 1e9, machine: str = "m1") -> dict:
    return {"model": model, "precision": precision, "threads": 1, "batch_size": 1, "perplexity": ppl,
            "decode_tokens_per_s": tok_s, "peak_rss_bytes": rss, "status": "ok", "error": None,
            "env.machine_id": machine}  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(points, st.integers(1, 3))
def test_front_is_exactly_the_non_dominated_rows(rows, n_objectives):
    values = np.array(rows, dtype=float)[:, :n_objectives]
    complete = values[~np.isnan(values).any(axis=1)]
    mask = non_dominated(complete)
    front, rest = complete[mask], complete[~mask]
    for point in front:
        assert not any(dominates(other, point) for other in complete)
    for point in rest:
        assert any(dominates(f, point) for f in front)
    if len(complete):
        assert mask.any()


@settings(max_examples=100, deadline=None)
@given(points)
def test_dataframe_front_matches_and_skips_nan(rows):
    frame = pd.DataFrame(
        [run("m", "int8", 10 + a, 1 + b, 1e9 + c) for a, b, c in rows]
    )  # ppl_ratio against no fp32: baseline is int8 itself
    columns = ["perplexity", "s_per_token", "peak_rss_bytes"]
    front = pareto_front(frame, quality="perplexity", cost=columns[1:])
    assert not front[columns].isna().any().any()
    complete = frame.assign(s_per_token=1 / frame.decode_tokens_per_s).dropna(subset=columns)[columns].to_numpy()
    objectives = front[columns].to_numpy()
    assert len(objectives) >= (1 if len(complete) else 0)
    for point in objectives:
        assert not any(dominates(other, point) for other in complete)
    on_front = {tuple(point) for point in objectives}
    for point in complete:  # every row left off is beaten by a row on the front
        assert tuple(point) in on_front or any(dominates(f, point) for f in objectives)


def test_front_per_model_and_machine_with_default_objectives():
    frame = pd.DataFrame(
        [
            run("a", "fp32", 10.0, 10),
            run("a", "int8", 10.2, 25),  # on the front: faster, slightly worse
            run("a", "int4", 10.5, 20),  # dominated by int8
            run("b", "fp32", 20.0, 5),
            run("b", "int4", 20.1, 12),
            run("a", "int4", 12.0, 40, machine="m2"),  # alone on machine m2: its own front
            {**run("a", "int8", 9.0, 99), "status": "failed"},  # failed runs never count
        ]
    )
    front = pareto_front(frame)
    keys = set(zip(front.model, front["env.machine_id"], front.precision, strict=True))
    assert keys == {("a", "m1", "fp32"), ("a", "m1", "int8"), ("b", "m1", "fp32"), ("b", "m1", "int4"),
                    ("a", "m2", "int4")}  # fmt: skip
    assert front.set_index(["model", "env.machine_id", "precision"]).loc[("a", "m1", "int8"), "ppl_ratio"] == 1.02


def test_maximized_columns_and_ties():
    frame = pd.DataFrame([run("a", "fp32", 10, 10), run("a", "bf16", 10, 10), run("a", "int8", 11, 5)])
    front = pareto_front(frame, quality="perplexity", cost="decode_tokens_per_s")
    assert sorted(front.precision) == ["bf16", "fp32"]  # equal points stay together; slower int8 is dominated


def test_unknown_column_is_named():
    with pytest.raises(EvalbenchError, match=r"unknown column 'watts'; valid: \['ppl_ratio', 's_per_token'"):
        pareto_front(pd.DataFrame([run("a", "fp32", 10, 10)]), cost="watts")
