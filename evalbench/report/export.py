"""Write the report folder: CSV tables, report.md, interactive HTML and, where possible, PNG figures."""

from __future__ import annotations

import logging
from html import escape
from pathlib import Path

import pandas as pd

from evalbench.analysis.objectives import GROUP_COLUMNS, NO_TOKEN_SET, with_objectives
from evalbench.analysis.recommend import Recommendation, recommend
from evalbench.config import Targets
from evalbench.report import figures

log = logging.getLogger(__name__)
PNG_HINT = "pip install kaleido and a Chrome or Chromium browser (Debian: apt-get install chromium)"
SUMMARY_COLUMNS = [
    "model",
    "backend",
    "precision",
    "weight_bits",
    "threads",
    "batch_size",
    "perplexity",
    "ppl_ratio",
    "decode_tokens_per_s",
    "prefill_tokens_per_s",
    "ttft_s",
    "peak_rss_bytes",
    "weight_bytes",
]


Group = tuple[str, str, str]  # model, machine, token set


def recommend_each(df: pd.DataFrame, targets: Targets) -> dict[Group, Recommendation]:
    """One recommendation per model, machine and token set: speeds are never compared across machines,
    nor quality across token sets. A group whose runs all failed gets a recommendation that says so."""
    table = with_objectives(df)
    return {
        (model, machine, tokens): recommend(table, model=model, machine=machine, token_set=tokens, **vars(targets))
        for (model, machine, tokens), _ in table.groupby(GROUP_COLUMNS, dropna=False)
    }


def section_title(group: Group) -> str:
    model, machine, tokens = group
    return f"{model} on machine {machine}" + ("" if tokens == NO_TOKEN_SET else f" ({tokens})")


def markdown_table(df: pd.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    rows = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _write_figure(fig, stem: Path, png: bool) -> list[Path]:
    written = [stem.with_suffix(".html")]
    fig.write_html(written[0], include_plotlyjs="directory")  # one shared plotly.min.js, works offline
    if png:
        try:
            fig.write_image(stem.with_suffix(".png"), width=1200, height=700)
            written.append(stem.with_suffix(".png"))
        except Exception as exc:  # no kaleido, or no browser for it to drive
            log.warning("PNG of %s skipped (%s); for PNG files: %s", stem.name, type(exc).__name__, PNG_HINT)
    return written


def write_report(df: pd.DataFrame, output_dir: Path, targets: Targets, png: bool = True) -> dict[str, object]:
    """Write every output for ``df`` into ``output_dir``; return the recommendations, the files and the HTML report."""
    output_dir.mkdir(parents=True, exist_ok=True)
    recommendations = recommend_each(df, targets)
    runs = with_objectives(df)
    frontier = pd.concat([r.frontier for r in recommendations.values()]) if recommendations else runs.head(0)
    chosen = [r.config for r in recommendations.values() if r.config is not None]
    runs["on_frontier"] = runs.index.isin(frontier.index)
    runs["recommended"] = runs.index.isin([c.name for c in chosen])
    runs.to_csv(output_dir / "runs.csv", index=False)
    frontier.to_csv(output_dir / "frontier.csv", index=False)
    files: list[Path] = [output_dir / "runs.csv", output_dir / "frontier.csv"]
    html = HtmlReport(f"Quality floor: {targets.quality}, max_quality_loss={targets.max_quality_loss:g} against the "
                      f"baseline; targets: {_targets_text(targets)}.")  # fmt: skip
    ok = runs[runs["status"] == "ok"]
    for group, rec in recommendations.items():
        html.section(section_title(group), str(rec), rec.frontier.reindex(columns=SUMMARY_COLUMNS))
        runs_of_group = ok[(ok[GROUP_COLUMNS] == pd.Series(group, index=GROUP_COLUMNS)).all(axis=1)]
        if len(runs_of_group):
            slug = _slug(group)
            fig = figures.quality_vs_speed(runs_of_group, rec.frontier, rec.config, rec.floor)
            files += _write_figure(fig, output_dir / f"quality_vs_speed-{slug}", png)
            html.figure(fig)
    if len(ok):
        for name, make in (
            ("speed_vs_threads", figures.speed_vs_threads),
            ("throughput_vs_batch", figures.throughput_vs_batch),
            ("memory_by_precision", figures.memory_by_precision),
        ):
            fig = make(ok)
            files += _write_figure(fig, output_dir / name, png)
            html.figure(fig)
    files += html.write(output_dir)
    return {"recommendations": recommendations, "files": files, "html": output_dir / "report.html"}


def _slug(group: Group) -> str:
    """A file-name part per section: model and machine, and the token set's hash when it has one."""
    model, machine, tokens = group
    parts = [model, machine] + ([] if tokens == NO_TOKEN_SET else [tokens.split()[1]])
    return "-".join(str(part) for part in parts).replace("/", "_")


class HtmlReport:
    """``report.md`` and ``report.html``: each section's decision trace and Pareto front; the HTML also
    holds every figure, drawn by the ``plotly.min.js`` written beside it (works offline)."""

    def __init__(self, intro: str) -> None:
        self.markdown = ["# evalbench report", "", intro, ""]
        self.body = [f"<h1>evalbench report</h1><p>{escape(intro)}</p>"]

    def section(self, title: str, trace: str, front: pd.DataFrame) -> None:
        self.markdown += [f"## {title}", "", "```", trace, "```", "", "Pareto front:", "", markdown_table(front), ""]
        table = front.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)
        self.body.append(f"<h2>{escape(title)}</h2><pre>{escape(trace)}</pre><h3>Pareto front</h3>{table}")

    def figure(self, fig) -> None:
        self.body.append(fig.to_html(full_html=False, include_plotlyjs=False))

    def write(self, output_dir: Path) -> list[Path]:
        (output_dir / "report.md").write_text("\n".join(self.markdown), encoding="utf-8")
        page = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>evalbench report</title>'
            '<script src="plotly.min.js"></script><style>body{font-family:sans-serif;margin:2em}'
            "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}</style></head><body>"
            + "\n".join(self.body) + "</body></html>"
        )  # fmt: skip
        (output_dir / "report.html").write_text(page, encoding="utf-8")
        return [output_dir / "report.md", output_dir / "report.html"]


def _targets_text(targets: Targets) -> str:
    parts = [
        f"{name} {value:g}"
        for name, value in (
            ("decode tokens/s >=", targets.min_decode_tokens_per_s),
            ("peak RSS bytes <=", targets.max_memory_bytes),
            ("ttft s <=", targets.max_ttft_s),
        )
        if value is not None
    ]
    return ", ".join(parts) or "none"
