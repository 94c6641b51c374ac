"""Write the report folder: CSV tables, report.md, interactive HTML and, where possible, PNG figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evalbench.analysis.objectives import GROUP_COLUMNS, with_objectives
from evalbench.analysis.recommend import Recommendation, recommend
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


@dataclass
class Targets:
    """The quality floor and performance targets of a recommendation (fields of ``recommend``)."""

    max_quality_loss: float = 0.05
    min_decode_tokens_per_s: float | None = None
    max_memory_bytes: float | None = None
    max_ttft_s: float | None = None
    quality: str = "perplexity"
    cost: str = "s_per_token"


def recommend_each(df: pd.DataFrame, targets: Targets) -> dict[tuple[str, str], Recommendation]:
    """One recommendation per model and machine: speeds are never compared across machines."""
    table = with_objectives(df)
    return {
        (model, machine): recommend(table, model=model, machine=machine, **vars(targets))
        for (model, machine), _ in table.groupby(GROUP_COLUMNS, dropna=False)
    }


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
    """Write every output for ``df`` into ``output_dir``; return the recommendations and the files."""
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
    ok = runs[runs["status"] == "ok"]
    sections = [
        "# evalbench report",
        "",
        f"Quality floor: {targets.quality}, max_quality_loss={targets.max_quality_loss:g} against the baseline; "
        f"targets: {_targets_text(targets)}.",
        "",
    ]
    for (model, machine), rec in recommendations.items():
        slug = f"{model}-{machine}".replace("/", "_")
        group = ok[(ok["model"] == model) & (ok["env.machine_id"] == machine)]
        if len(group):
            fig = figures.quality_vs_speed(group, rec.frontier, rec.config, rec.floor)
            files += _write_figure(fig, output_dir / f"quality_vs_speed-{slug}", png)
        sections += [
            f"## {model} on machine {machine}",
            "",
            "```",
            str(rec),
            "```",
            "",
            "Pareto front:",
            "",
            markdown_table(rec.frontier.reindex(columns=SUMMARY_COLUMNS)),
            "",
        ]
    if len(ok):
        for name, make in (
            ("speed_vs_threads", figures.speed_vs_threads),
            ("throughput_vs_batch", figures.throughput_vs_batch),
            ("memory_by_precision", figures.memory_by_precision),
        ):
            files += _write_figure(make(ok), output_dir / name, png)
    (output_dir / "report.md").write_text("\n".join(sections), encoding="utf-8")
    files.append(output_dir / "report.md")
    return {"recommendations": recommendations, "files": files}


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
