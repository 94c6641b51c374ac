"""Plotly figures of a results table; each function returns one figure."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from evalbench.analysis.objectives import configuration_order
from evalbench.analysis.recommend import QualityFloor

HOVER = ["configuration", "threads", "batch_size", "perplexity", "decode_tokens_per_s", "prefill_tokens_per_s"]


def _order(runs: pd.DataFrame) -> dict[str, list[str]]:
    return {"configuration": configuration_order(runs)}


def _group_label(df: pd.DataFrame) -> pd.Series:
    return df["model"].astype(str) + " @ " + df["env.machine_id"].astype(str)


def quality_vs_speed(
    runs: pd.DataFrame, frontier: pd.DataFrame, recommended: pd.Series | None, floor: QualityFloor
) -> go.Figure:
    """The floor's quality metric (perplexity as a ratio) against decode speed, front and floor drawn."""
    metric = "ppl_ratio" if floor.metric == "perplexity" else floor.metric
    threshold = 1 + floor.max_loss if floor.metric == "perplexity" else floor.threshold
    fig = px.scatter(
        runs,
        x="decode_tokens_per_s",
        y=metric,
        color="configuration",
        symbol="batch_size",
        hover_data=HOVER,
        category_orders=_order(runs),
        labels={"decode_tokens_per_s": "decode tokens/s", "ppl_ratio": "perplexity / baseline"},
    )
    line = frontier.sort_values("decode_tokens_per_s")
    fig.add_trace(
        go.Scatter(
            x=line["decode_tokens_per_s"],
            y=line[metric],
            mode="lines",
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
        fig.add_trace(
            go.Scatter(
                x=[recommended["decode_tokens_per_s"]],
                y=[recommended[metric]],
                mode="markers",
                name="recommended",
                marker={"size": 18, "symbol": "star", "color": "gold", "line": {"width": 1, "color": "black"}},
            )
        )
    model, machine = runs["model"].iloc[0], runs["env.machine_id"].iloc[0]
    fig.update_layout(title=f"Quality vs decode speed: {model} on {machine}")
    return fig


def speed_vs_threads(runs: pd.DataFrame) -> go.Figure:
    """Decode and prefill throughput against thread count, one line per configuration (backend and precision)."""
    long = runs.melt(
        id_vars=["configuration", "threads", "batch_size", "model", "env.machine_id"],
        value_vars=["decode_tokens_per_s", "prefill_tokens_per_s"],
        var_name="phase",
        value_name="tokens_per_s",
    ).sort_values("threads")
    long["group"] = _group_label(long) + ", batch " + long["batch_size"].astype(str)
    fig = px.line(
        long,
        x="threads",
        y="tokens_per_s",
        color="configuration",
        facet_col="phase",
        facet_row="group",
        markers=True,
        labels={"tokens_per_s": "tokens/s"},
        category_orders=_order(runs),
    )
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(tickvals=sorted(runs["threads"].unique()))
    return fig.update_layout(title="Speed vs threads")


def throughput_vs_batch(runs: pd.DataFrame) -> go.Figure:
    """Decode throughput against batch size, one line per configuration and thread count; the roofline dashed."""
    table = runs.assign(
        group=_group_label(runs), series=runs["configuration"] + ", " + runs["threads"].astype(str) + " thr"
    )
    measures = ["decode_tokens_per_s"]
    if "roofline_tokens_per_s" in table and table["roofline_tokens_per_s"].notna().any():
        measures.append("roofline_tokens_per_s")
    long = table.melt(
        id_vars=["series", "group", "batch_size"], value_vars=measures, var_name="measure", value_name="tokens_per_s"
    )
    fig = px.line(
        long.sort_values("batch_size"),
        x="batch_size",
        y="tokens_per_s",
        color="series",
        line_dash="measure",
        facet_col="group",
        markers=True,
        labels={"tokens_per_s": "decode tokens/s", "measure": ""},
    )
    fig.update_xaxes(tickvals=sorted(runs["batch_size"].unique()))
    return fig.update_layout(title="Decode throughput vs batch size (dashed: memory-bandwidth roofline)")


def memory_by_precision(runs: pd.DataFrame) -> go.Figure:
    """Weight bytes and peak resident memory per configuration (the largest over threads and batch sizes)."""
    keys = ["model", "env.machine_id", "configuration"]
    table = runs.groupby(keys, as_index=False)[["weight_bytes", "peak_rss_bytes"]].max()
    long = table.melt(id_vars=keys, var_name="memory", value_name="bytes")
    long["group"] = _group_label(long)
    fig = px.bar(
        long, x="configuration", y="bytes", color="memory", barmode="group", facet_col="group",
        category_orders=_order(runs),
    )  # fmt: skip
    return fig.update_layout(title="Memory per precision")
