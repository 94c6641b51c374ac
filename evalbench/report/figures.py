"""Plotly figures of one model's runs on one machine; each function returns one figure whose title is the
question it answers. Speeds carry their 95% intervals; runtimes are small multiples side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from evalbench.analysis.recommend import Recommendation
from evalbench.report import units
from evalbench.report.answer import baseline_name
from evalbench.report.tables import numbered_front

WORDS = {
    "configuration": "runtime and precision",
    "decode_tokens_per_s": "decode tokens/s",
    "prefill_tokens_per_s": "prefill tokens/s",
    "tokens_per_s": "tokens/s",
    "batch_size": "batch size",
    "threads": "threads",
    "precision": "precision",
    "runtime": "",
    "measure": "",
    "series": "",
    "memory": "",
    "gib": "GiB",
    "roofline_percent": "% of the memory-bandwidth roofline",
    "prompt_tokens": "context (prompt tokens)",
}
HOVER = ["threads", "batch_size", "perplexity", "decode_tokens_per_s", "prefill_tokens_per_s"]


def _titled(fig: go.Figure, question: str, subtitle: str, height: int = 560, from_zero: bool = True) -> go.Figure:
    """The question as the title, what is drawn beneath it; facet titles as their values alone; the legend
    beneath the plot (wrapping, never scrolling); ``from_zero``: no y axis (a speed, a size) below 0."""
    fig.for_each_annotation(lambda note: note.update(text=note.text.split("=", 1)[-1]))
    if from_zero:
        fig.update_yaxes(autorangeoptions={"minallowed": 0})
    return fig.update_layout(
        title={"text": f"{question}<br><sup>{subtitle}</sup>"}, margin={"t": 90}, height=height,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0},
    )  # fmt: skip


def _labelled(runs: pd.DataFrame) -> pd.DataFrame:
    """``runtime`` in words and ``precision`` with its levers, ordered most to least bits."""
    out = runs.sort_values(["weight_bits", "backend", "precision"], ascending=[False, True, True]).copy()
    out["runtime"] = out["backend"].map(units.runtime)
    levers = out["levers"].fillna("") if "levers" in out else pd.Series("", index=out.index)
    out["precision"] = out["precision"].astype(str) + np.where(levers != "", " (" + levers + ")", "")
    return out


def _panels(frame: pd.DataFrame) -> dict[str, list[str]]:
    """One order of the runtime panels for every figure: by name (llama.cpp, ONNX Runtime GenAI, OpenVINO, PyTorch)."""
    return {"runtime": sorted(frame["runtime"].unique(), key=str.lower)}


def _errors(runs: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """The distances from ``column`` up and down to its recorded 95% interval (0 where unknown)."""
    low, high = runs.get(f"{column}_ci_low"), runs.get(f"{column}_ci_high")
    plus = (high - runs[column]).fillna(0) if high is not None else pd.Series(0.0, index=runs.index)
    minus = (runs[column] - low).fillna(0) if low is not None else pd.Series(0.0, index=runs.index)
    return plus, minus


class SymLog:
    """A symmetric log scale: linear within ``±linear`` of 0, logarithmic beyond, so that losses of 0.01%
    and 30% are both told apart (plotly has no such axis: values are mapped, ticks labelled with the originals)."""

    def __init__(self, linear: float) -> None:
        self.linear = linear

    def __call__(self, values):
        values = np.asarray(values, dtype=float)
        return np.sign(values) * np.log10(1 + np.abs(values) / self.linear)

    def ticks(self, low: float, high: float, unit: str) -> tuple[list[float], list[str]]:
        steps = [0.0] + [self.linear * m * 10**e for e in range(8) for m in (1, 3)]
        values = sorted({s for s in steps if s <= high * 1.05} | {-s for s in steps if -s >= low * 1.05})
        return [float(self(v)) for v in values], [f"{v:+.3g}{unit}" if v else f"0{unit}" for v in values]


def quality_vs_speed(runs: pd.DataFrame, rec: Recommendation, subtitle: str) -> go.Figure:
    """Quality loss (symmetric log scale, 95% intervals) against decode speed: the floor drawn, the Pareto front
    joined and numbered as in the front table, the recommended run starred."""
    floor = rec.floor
    scale, unit = (1.0, "") if floor.absolute else (100.0, "%")
    table = _labelled(runs).assign(quality_loss=lambda t: floor.losses(t))
    intervals = np.array([floor.interval(row) for _, row in table.iterrows()], dtype=float).reshape(-1, 2)
    losses = table["quality_loss"].to_numpy(dtype=float) * scale
    symlog = SymLog(floor.max_loss * scale / 10 if floor.max_loss > 0 else (0.01 if unit else 1e-4))
    table["y"] = symlog(losses)
    table["y_plus"] = symlog(intervals[:, 1] * scale) - table["y"]
    table["y_minus"] = table["y"] - symlog(intervals[:, 0] * scale)
    table["x_plus"], table["x_minus"] = _errors(table, "decode_tokens_per_s")
    table["batch"] = "batch " + table["batch_size"].astype(str)
    table["run"] = table["configuration"] + ", " + table["threads"].astype(str) + " thr, " + table["batch"]
    table["loss"] = [floor.format_loss(v) for v in table["quality_loss"]]
    fig = px.scatter(
        table, x="decode_tokens_per_s", y="y", error_x="x_plus", error_x_minus="x_minus", error_y="y_plus",
        error_y_minus="y_minus", color="configuration", symbol="batch", hover_name="run",
        hover_data={"y": False, "loss": True, **{c: True for c in HOVER if c in table}}, labels=WORDS,
    )  # fmt: skip
    _draw_front(fig, rec, symlog, scale)
    fig.add_hline(y=float(symlog(floor.max_loss * scale)), line_dash="dash", line_color="red",
                  annotation_text=f"floor: {floor.describe()}", annotation_position="top left")  # fmt: skip
    if rec.config is not None:
        star = table.loc[rec.config.name] if rec.config.name in table.index else None
        if star is not None:
            fig.add_trace(go.Scatter(
                x=[star["decode_tokens_per_s"]], y=[star["y"]], mode="markers", name="recommended",
                marker={"size": 20, "symbol": "star", "color": "gold", "line": {"width": 1, "color": "black"}},
            ))  # fmt: skip
    finite = np.concatenate([losses, intervals.ravel() * scale, [floor.max_loss * scale]])
    finite = finite[np.isfinite(finite)]
    tickvals, ticktext = symlog.ticks(min(finite.min(), 0), max(finite.max(), 0), unit)
    axis = f"{floor.metric} loss against {baseline_name(rec)} ({unit or 'absolute'}, symmetric log scale)"
    fig.update_yaxes(tickvals=tickvals, ticktext=ticktext, title=axis)
    fig.update_xaxes(autorangeoptions={"minallowed": 0})
    return _titled(fig, "Which runs stay within the quality floor, and how fast do they decode?",
                   f"{subtitle}; 95% intervals; numbers: the Pareto front table; lower is better",
                   height=680, from_zero=False)  # fmt: skip


def _draw_front(fig: go.Figure, rec: Recommendation, symlog: SymLog, scale: float) -> None:
    front = numbered_front(rec)
    if front.empty:
        return
    front = front.sort_values("decode_tokens_per_s")
    fig.add_trace(go.Scatter(
        x=front["decode_tokens_per_s"], y=symlog(front["quality_loss"].to_numpy(dtype=float) * scale),
        mode="lines+markers+text", text=front["front_number"].astype(str), textposition="top center",
        textfont={"size": 13, "color": "black"}, name="Pareto front (numbered)",
        line={"dash": "dot", "color": "black"}, marker={"size": 4, "color": "black"},
    ))  # fmt: skip


def _speeds_long(runs: pd.DataFrame, measures: list[str]) -> pd.DataFrame:
    """One row per run and measure: its tokens/s and the distances to its 95% interval."""
    parts = []
    for measure in measures:
        plus, minus = _errors(runs, measure)
        words = WORDS.get(measure, measure)
        parts.append(runs.assign(measure=words, tokens_per_s=runs[measure], plus=plus, minus=minus))
    return pd.concat(parts, ignore_index=True).copy()  # one block per dtype: columns are added after


def speed_vs_threads(runs: pd.DataFrame, subtitle: str) -> go.Figure:
    """Decode and prefill tokens/s against threads: one column per runtime, one line per precision and batch."""
    long = _speeds_long(_labelled(runs), ["decode_tokens_per_s", "prefill_tokens_per_s"])
    long["batch"] = "batch " + long["batch_size"].astype(str)
    fig = px.line(
        long.sort_values("threads"), x="threads", y="tokens_per_s", error_y="plus", error_y_minus="minus",
        color="precision", line_dash="batch", facet_col="runtime", facet_row="measure", markers=True, labels=WORDS,
        category_orders=_panels(long),
    )  # fmt: skip
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(tickvals=sorted(runs["threads"].unique()))
    fig.update_layout(legend_title_text="precision, batch size")
    return _titled(fig, "How does speed scale with threads?", f"{subtitle}; 95% intervals")


def throughput_vs_batch(runs: pd.DataFrame, subtitle: str) -> go.Figure:
    """Decode tokens/s (all sequences together) against batch size: one column per runtime."""
    table = _labelled(runs)
    table["plus"], table["minus"] = _errors(table, "decode_tokens_per_s")
    table["series"] = table["threads"].astype(str) + " threads"
    fig = px.line(
        table.sort_values("batch_size"), x="batch_size", y="decode_tokens_per_s", error_y="plus",
        error_y_minus="minus", color="precision", line_dash="series", facet_col="runtime", markers=True, labels=WORDS,
        category_orders=_panels(table),
    )  # fmt: skip
    fig.update_xaxes(tickvals=sorted(runs["batch_size"].unique()))
    fig.update_layout(legend_title_text="precision, threads")
    return _titled(fig, "How much does batching raise decode throughput?", f"{subtitle}; 95% intervals")


def roofline_fraction(runs: pd.DataFrame, subtitle: str) -> go.Figure | None:
    """Decode speed as a percentage of the memory-bandwidth roofline (bytes each step must read over the
    measured bandwidth); None when no run recorded one."""
    if "roofline_tokens_per_s" not in runs or runs["roofline_tokens_per_s"].isna().all():
        return None
    table = _labelled(runs[runs["roofline_tokens_per_s"] > 0])
    table["roofline_percent"] = 100 * table["decode_tokens_per_s"] / table["roofline_tokens_per_s"]
    table["series"] = "batch " + table["batch_size"].astype(str) + ", " + table["threads"].astype(str) + " thr"
    fig = px.scatter(
        table, x="precision", y="roofline_percent", color="series", facet_col="runtime", labels=WORDS,
        category_orders=_panels(table),
        hover_data=["decode_tokens_per_s", "roofline_tokens_per_s"],
    )  # fmt: skip
    fig.update_traces(marker={"size": 10}).update_layout(legend_title_text="batch size and threads")
    fig.update_xaxes(matches=None)
    return _titled(fig, "How close does decoding come to the memory-bandwidth limit?",
                   f"{subtitle}; 100%: each step reads weights and KV cache at the measured bandwidth")  # fmt: skip


def speed_vs_context(runs: pd.DataFrame, subtitle: str) -> go.Figure | None:
    """Decode tokens/s at each context depth measured (``speed.prompt_tokens`` as a list or an axis); None when
    every run decoded after one depth only."""
    depths = _depth_rows(runs)
    if depths["prompt_tokens"].nunique() < 2:
        return None
    fig = px.line(
        depths.sort_values("prompt_tokens"), x="prompt_tokens", y="decode_tokens_per_s", error_y="plus",
        error_y_minus="minus", color="precision", line_dash="series", facet_col="runtime", markers=True,
        labels=WORDS, log_x=True, category_orders=_panels(depths),
    )  # fmt: skip
    fig.update_xaxes(tickvals=sorted(depths["prompt_tokens"].unique()))
    fig.update_layout(legend_title_text="precision, batch size and threads")
    return _titled(fig, "How much slower is decoding after a long context?", f"{subtitle}; 95% intervals")


def _depth_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run and context depth: the run's own (``prompt_tokens``) and those of ``speed_at_depth``."""
    table = _labelled(runs)
    table["series"] = "batch " + table["batch_size"].astype(str) + ", " + table["threads"].astype(str) + " thr"
    rows = []
    for _, row in table.iterrows():
        base = {key: row[key] for key in ("runtime", "precision", "series")}
        deeper = row.get("speed_at_depth")
        rows += [_depth_point(base, figures) for figures in [row, *(deeper if isinstance(deeper, list) else [])]]
    out = pd.DataFrame(rows)
    return out[out["prompt_tokens"].map(units.known)]


def _depth_point(base: dict, figures) -> dict:
    """``base`` with the decode speed at one depth (a record's, or one of its ``speed_at_depth`` entries)."""
    value = figures.get("decode_tokens_per_s")
    low, high = figures.get("decode_tokens_per_s_ci_low"), figures.get("decode_tokens_per_s_ci_high")
    return {
        **base, "prompt_tokens": figures.get("prompt_tokens"), "decode_tokens_per_s": value,
        "plus": high - value if units.known(high) else 0.0, "minus": value - low if units.known(low) else 0.0,
    }  # fmt: skip


def memory_by_precision(runs: pd.DataFrame, subtitle: str) -> go.Figure:
    """Weights and peak resident memory (GiB) per configuration, the largest over threads and batch sizes."""
    table = (
        _labelled(runs)
        .groupby(["runtime", "precision"], as_index=False, sort=False)[["weight_bytes", "peak_rss_bytes"]]
        .max()
    )
    long = table.melt(id_vars=["runtime", "precision"], var_name="memory", value_name="bytes")
    long["memory"] = long["memory"].map({"weight_bytes": "weights", "peak_rss_bytes": "peak resident"})
    long["gib"] = long["bytes"] / 2**30
    fig = px.bar(
        long, x="precision", y="gib", color="memory", barmode="group", facet_col="runtime", labels=WORDS,
        category_orders=_panels(long),
    )  # fmt: skip
    fig.update_xaxes(matches=None)
    return _titled(fig, "How much memory does each configuration take?",
                   f"{subtitle}; the largest over threads and batch sizes")  # fmt: skip
