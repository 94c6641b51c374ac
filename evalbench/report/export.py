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
from evalbench.report.answer import Answer, answer_of
from evalbench.report.tables import front_table

log = logging.getLogger(__name__)
PNG_HINT = "pip install kaleido and a Chrome or Chromium browser (Debian: apt-get install chromium)"


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


class FigureWriter:
    """Each figure as interactive HTML and, while a renderer works, as PNG: the first failure is said once, with
    what to install, and no other PNG is tried."""

    def __init__(self, png: bool) -> None:
        self.png = png

    def write(self, fig, stem: Path) -> list[Path]:
        written = [stem.with_suffix(".html")]
        fig.write_html(written[0], include_plotlyjs="directory")  # one shared plotly.min.js, works offline
        if self.png:
            try:
                fig.write_image(stem.with_suffix(".png"), width=1200, height=700)
                written.append(stem.with_suffix(".png"))
            except Exception as exc:  # no kaleido, or no browser for it to drive
                self.png = False
                log.warning("PNG figures skipped (%s); for PNG files: %s", type(exc).__name__, PNG_HINT)
        return written


def write_report(df: pd.DataFrame, output_dir: Path, targets: Targets, png: bool = True) -> dict[str, object]:
    """Write every output for ``df`` into ``output_dir``; return the recommendations, their answers, the files
    and the HTML report."""
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
    answers = {group: answer_of(section_title(group), rec, targets) for group, rec in recommendations.items()}
    html, writer = HtmlReport(), FigureWriter(png)
    ok = runs[runs["status"] == "ok"]
    for group, rec in recommendations.items():
        html.section(answers[group], front_table(rec) if rec.floor is not None else None)
        runs_of_group = ok[(ok[GROUP_COLUMNS] == pd.Series(group, index=GROUP_COLUMNS)).all(axis=1)]
        for name, fig in group_figures(runs_of_group, rec, group):
            files += writer.write(fig, output_dir / f"{name}-{_slug(group)}")
            html.figure(fig)
    files += html.write(output_dir)
    return {"recommendations": recommendations, "answers": answers, "files": files, "html": output_dir / "report.html"}


def group_figures(runs: pd.DataFrame, rec: Recommendation, group: Group) -> list[tuple[str, object]]:
    """The figures of one group's successful runs, each under its file name: none when it has no run."""
    if runs.empty:
        return []
    model, machine, _ = group
    subtitle = f"{model} on machine {machine}"
    made = [("quality_vs_speed", figures.quality_vs_speed(runs, rec, subtitle))] if rec.floor is not None else []
    for name, make in (
        ("speed_vs_context", figures.speed_vs_context),
        ("speed_vs_threads", figures.speed_vs_threads),
        ("throughput_vs_batch", figures.throughput_vs_batch),
        ("roofline_fraction", figures.roofline_fraction),
        ("memory_by_precision", figures.memory_by_precision),
    ):
        fig = make(runs, subtitle)
        if fig is not None:
            made.append((name, fig))
    return made


def _slug(group: Group) -> str:
    """A file-name part per section: model and machine, and the token set's hash when it has one."""
    model, machine, tokens = group
    parts = [model, machine] + ([] if tokens == NO_TOKEN_SET else [tokens.split()[1]])
    return "-".join(str(part) for part in parts).replace("/", "_")


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;max-width:1300px;color:#222}
h1{font-size:1.4em;margin:0 0 .4em} h2{font-size:1.15em;margin:1.6em 0 .5em}
.answer{border:2px solid #2a7d2e;border-radius:8px;padding:.8em 1.2em;background:#f3faf3;margin-bottom:1em}
.answer.none{border-color:#b3261e;background:#fdf3f2}
.headline{font-size:1.25em;font-weight:600;margin:0 0 .5em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:0}
dt{font-weight:600;color:#555} dd{margin:0;overflow-wrap:anywhere}
code{background:#fff;border:1px solid #ccc;padding:1px 4px;white-space:pre-wrap;overflow-wrap:anywhere}
details{margin-top:.6em} li{margin:.2em 0}
table{border-collapse:collapse;font-size:.9em} th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
td:nth-child(2),th:nth-child(2){text-align:left} .js-plotly-plot{margin:1em 0}
"""


class HtmlReport:
    """``report.md`` and ``report.html``: each group's answer card first, its Pareto front in human units, then
    its figures; the HTML draws them with the ``plotly.min.js`` written beside it (works offline)."""

    def __init__(self) -> None:
        self.markdown = ["# evalbench report", ""]
        self.body = ["<h1>evalbench report: what to deploy, and why</h1>"]

    def section(self, answer: Answer, front: pd.DataFrame | None) -> None:
        self.markdown += [f"## {answer.title}", "", answer.to_markdown(), ""]
        self.body.append(f"<h2>{escape(answer.title)}</h2>{answer.to_html()}")
        if front is not None and len(front):
            self.markdown += ["Pareto front (no run is both faster and closer to the baseline):", "",
                              markdown_table(front), ""]  # fmt: skip
            table = front.to_html(index=False, border=0, escape=True)
            self.body.append(f"<h3>Pareto front: no run is both faster and closer to the baseline</h3>{table}")

    def figure(self, fig) -> None:
        self.body.append(fig.to_html(full_html=False, include_plotlyjs=False))

    def write(self, output_dir: Path) -> list[Path]:
        (output_dir / "report.md").write_text("\n".join(self.markdown), encoding="utf-8")
        page = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>evalbench report</title>'
            f'<script src="plotly.min.js"></script><style>{STYLE}</style></head><body>'
            + "\n".join(self.body) + "</body></html>"
        )  # fmt: skip
        (output_dir / "report.html").write_text(page, encoding="utf-8")
        return [output_dir / "report.md", output_dir / "report.html"]
