"""Plotly figures of a results table; each function returns one figure."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from evalbench.analysis.objectives import configuration_order
from evalbench.analysis.recommend import QualityFloor

HOVER = ["threads", "batch_size", "perplexity", "decode_tokens_per_s", "prefill_tokens_per_s"]
WORDS = {
    "configuration": "runtime and precision",
    "decode_tokens_per_s": "decode tokens/s",
    "prefill_tokens_per_s": "prefill tokens/s",
    "tokens_per_s": "tokens/s",
    "roofline_tokens_per_s": "memory-bandwidth roofline",
    "ppl_ratio": "perplexity / baseline",
    "batch_size": "batch size",
    "threads": "threads",
    "perplexity": "perplexity",
    "series": "runtime, precision, threads",
    "measure": "",
    "memory": "",
    "weight_bytes": "weight bytes",
    "peak_rss_bytes": "peak resident memory (bytes)",
    "bytes": "bytes",
}


def _order(runs: pd.DataFrame) -> dict[str, list[str]]:
    return {"configuration": configuration_order(runs)}


def _group_label(df: pd.DataFrame) -> pd.Series:
    return df["model"].astype(str) + " on " + df["env.machine_id"].astype(str)


def _run_label(runs: pd.DataFrame) -> pd.Series:
    return runs["configuration"] + ", " + runs["threads"].astype(str) + " thr, batch " + runs["batch_size"].astype(str)


def _with_errors(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Add ``<column>_plus`` and ``<column>_minus``: the distances to its 95% interval (0 where unknown)."""
    out = runs.copy()
    low, high = out.get(f"{column}_ci_low"), out.get(f"{column}_ci_high")
    out[f"{column}_plus"] = (high - out[column]).fillna(0) if high is not None else 0.0
    out[f"{column}_minus"] = (out[column] - low).fillna(0) if low is not None else 0.0
    return out


def _words(fig: go.Figure) -> go.Figure:
    """Facet titles as their values alone ("batch 4", not "group=... batch 4")."""
    return fig.for_each_annotation(lambda note: note.update(text=note.text.split("=", 1)[-1]))


def quality_vs_speed(
    runs: pd.DataFrame, frontier: pd.DataFrame, recommended: pd.Series | None, floor: QualityFloor
) -> go.Figure:
    """The floor's quality metric (perplexity as a ratio) against decode speed with 95% intervals; the Pareto
    front drawn and each run on it named; the floor and the recommended run marked."""
    metric = "ppl_ratio" if floor.metric == "perplexity" else floor.metric
    threshold = 1 + floor.max_loss if floor.metric == "perplexity" else floor.threshold
    table = _with_errors(_with_errors(runs, "decode_tokens_per_s"), metric)
    fig = px.scatter(
        table,
        x="decode_tokens_per_s",
        y=metric,
        error_x="decode_tokens_per_s_plus",
        error_x_minus="decode_tokens_per_s_minus",
        error_y=f"{metric}_plus",
        error_y_minus=f"{metric}_minus",
        color="configuration",
        symbol="batch_size",
        hover_name=_run_label(table),
        hover_data=[c for c in HOVER if c in table],
        category_orders=_order(runs),
        labels=WORDS,
    )
    line = frontier.sort_values("decode_tokens_per_s")
    fig.add_trace(
        go.Scatter(
            x=line["decode_tokens_per_s"],
            y=line[metric],
            mode="lines+text",
            text=_run_label(line) if len(line) else [],
            textposition="top right",
            textfont={"size": 10},
            name="Pareto front",
            line={"dash": "dot", "color": "black"},
        )
    )
    fig.add_hline(
        y=threshold,
        line_dash="dash",
        line_color="red",
        annotation_text=f"quality floor ({floor.describe()})",
    )
    if recommended is not None:
        _mark_recommended(fig, recommended, metric)
    model, machine = runs["model"].iloc[0], runs["env.machine_id"].iloc[0]
    fig.update_layout(title=f"Quality vs decode speed (95% intervals): {model} on {machine}")
    return fig


def _mark_recommended(fig: go.Figure, row: pd.Series, metric: str) -> None:
    name = _run_label(row.to_frame().T).iloc[0]
    fig.add_trace(
        go.Scatter(
            x=[row["decode_tokens_per_s"]],
            y=[row[metric]],
            mode="markers",
            name=f"recommended: {name}",
            hovertext=[f"recommended: {name}"],
            marker={"size": 18, "symbol": "star", "color": "gold", "line": {"width": 1, "color": "black"}},
        )
    )
    fig.add_annotation(
        x=row["decode_tokens_per_s"], y=row[metric], text=f"recommended: {name}", showarrow=True, arrowhead=2, ay=-40
    )


def _speeds_long(runs: pd.DataFrame, id_vars: list[str], measures: list[str]) -> pd.DataFrame:
    """One row per run and measure, with its value and the distances to its 95% interval."""
    parts = []
    for measure in measures:
        table = _with_errors(runs, measure)
        part = table[id_vars].assign(
            measure=WORDS.get(measure, measure),
            tokens_per_s=table[measure],
            plus=table[f"{measure}_plus"],
            minus=table[f"{measure}_minus"],
        )
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def speed_vs_threads(runs: pd.DataFrame) -> go.Figure:
    """Decode and prefill throughput (95% intervals) against thread count, one line per runtime and precision."""
    long = _speeds_long(
        runs, ["configuration", "threads", "batch_size", "model", "env.machine_id"],
        ["decode_tokens_per_s", "prefill_tokens_per_s"],
    ).sort_values("threads")  # fmt: skip
    long["group"] = _group_label(long) + ", batch " + long["batch_size"].astype(str)
    fig = px.line(
        long,
        x="threads",
        y="tokens_per_s",
        error_y="plus",
        error_y_minus="minus",
        color="configuration",
        facet_col="measure",
        facet_row="group",
        markers=True,
        labels=WORDS,
        category_orders=_order(runs),
    )
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(tickvals=sorted(runs["threads"].unique()))
    return _words(fig).update_layout(title="Speed vs threads (95% intervals)")


def throughput_vs_batch(runs: pd.DataFrame) -> go.Figure:
    """Decode throughput (95% intervals) against batch size, one line per runtime, precision and thread
    count; the memory-bandwidth roofline dashed."""
    series = runs["configuration"] + ", " + runs["threads"].astype(str) + " thr"
    table = runs.assign(group=_group_label(runs), series=series)
    measures = ["decode_tokens_per_s"]
    if "roofline_tokens_per_s" in table and table["roofline_tokens_per_s"].notna().any():
        measures.append("roofline_tokens_per_s")
    long = _speeds_long(table, ["series", "group", "batch_size"], measures)
    fig = px.line(
        long.sort_values("batch_size"),
        x="batch_size",
        y="tokens_per_s",
        error_y="plus",
        error_y_minus="minus",
        color="series",
        line_dash="measure",
        facet_col="group",
        markers=True,
        labels={**WORDS, "tokens_per_s": "decode tokens/s"},
    )
    fig.update_xaxes(tickvals=sorted(runs["batch_size"].unique()))
    return _words(fig).update_layout(title="Decode throughput vs batch size (95% intervals; dashed: roofline)")


def memory_by_precision(runs: pd.DataFrame) -> go.Figure:
    """Weight bytes and peak resident memory per configuration (the largest over threads and batch sizes)."""
    keys = ["model", "env.machine_id", "configuration"]
    table = runs.groupby(keys, as_index=False)[["weight_bytes", "peak_rss_bytes"]].max()
    long = table.melt(id_vars=keys, var_name="memory", value_name="bytes")
    long["memory"] = long["memory"].map(WORDS)
    long["group"] = _group_label(long)
    fig = px.bar(
        long, x="configuration", y="bytes", color="memory", barmode="group", facet_col="group",
        category_orders=_order(runs), labels=WORDS,
    )  # fmt: skip
    return _words(fig).update_layout(title="Memory per runtime and precision")
