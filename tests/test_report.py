"""evalbench-report and the analysis notebook on a real (tiny-model) results folder."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import nbclient
import nbformat
import pandas as pd
import pytest
from conftest import REPO, run_cli

from evalbench.analysis.objectives import with_objectives
from evalbench.report import units


def report(*args: str, cwd: Path):
    return run_cli(*args, cwd=cwd, program="evalbench-report")


FIGURES = ("quality_vs_speed", "speed_vs_threads", "throughput_vs_batch", "roofline_fraction", "memory_by_precision")


def test_report_writes_every_output(tiny_results, tmp_path):
    out = report(f"results_dir={tiny_results}", f"output_dir={tmp_path}", "max_quality_loss=0.5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Recommended: PyTorch " in out.stdout and "3 failed run(s) left out" in out.stdout
    for name in ("runs.csv", "frontier.csv", "report.md", "report.html", "plotly.min.js"):
        assert (tmp_path / name).is_file(), name
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*-tiny-*.html")) == sorted(FIGURES)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 9 and {"on_frontier", "recommended", "ppl_ratio", "s_per_token", "status"} <= set(runs)
    assert runs.peak_rss_bytes.dropna().gt(2**20).all()  # raw bytes for analysis, not MiB
    chosen = runs[runs.recommended]
    assert len(chosen) == 1 and chosen.ppl_ratio.iloc[0] <= 1.5  # the floor that was asked for
    clearly_within = runs[(runs.status == "ok") & (runs.ppl_ratio_ci_high <= 1.5)]
    assert chosen.s_per_token.iloc[0] == clearly_within.s_per_token.min()  # no target: the cheapest within the floor
    assert "loss allowed: try INT8" in out.stdout and "no performance target: the cheapest run" in out.stdout
    frontier = pd.read_csv(tmp_path / "frontier.csv")
    assert set(frontier.run_id) == set(runs[runs.on_frontier].run_id)
    assert (runs[runs.status == "ok"].roofline_tokens_per_s > 0).all()
    text = (tmp_path / "report.md").read_text()
    assert "## tiny on machine" in text and "| # | configuration | threads |" in text
    page = (tmp_path / "report.html").read_text()
    assert page.count("Plotly.newPlot") == len(FIGURES) and f"open {tmp_path / 'report.html'}" in out.stdout


def test_the_answer_is_the_same_in_the_console_report_md_and_html(tiny_results, tmp_path):
    """One set of facts: the console's answer card is report.md's, and report.html shows each of its values."""
    from html import escape

    out = report(f"results_dir={tiny_results}", f"output_dir={tmp_path}", "max_quality_loss=0.5", cwd=tmp_path)
    card = out.stdout[out.stdout.index("Recommended: ") : out.stdout.index("How it was chosen:")].splitlines()
    runs = pd.read_csv(tmp_path / "runs.csv")
    chosen = runs[runs.recommended].iloc[0]
    facts = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in card[1:])
    assert facts["decode speed"].startswith(f"{chosen.decode_tokens_per_s:.1f} tok/s (95%: ")
    assert facts["peak memory"].startswith(f"{units.size(chosen.peak_rss_bytes)} resident")
    assert units.size(chosen.peak_rss_bytes) == f"{chosen.peak_rss_bytes / 2**20:.0f} MiB"  # hundreds of MiB
    assert facts["reproduce"].strip().startswith("evalbench model=hub model.path=")
    # The run's own overrides (the sweep's axes at this run's values), less where its files went.
    words = facts["reproduce"].split()
    assert {f"precision={chosen.precision}", f"batch_size={chosen.batch_size}", "model.name=tiny"} <= set(words)
    assert [word for word in words if word.startswith(("results_dir=", "precision=", "batch_size="))] == [
        f"precision={chosen.precision}",
        f"batch_size={chosen.batch_size}",
    ]
    markdown, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    for label, value in facts.items():
        value = value.strip()
        assert f"**{label}**: " + (f"`{value}`" if label == "reproduce" else value) in markdown, label
        assert f"<dt>{label}</dt><dd>" in page and escape(value) in page, label
    assert page.index('class="answer"') < page.index("Pareto front") < page.index("Plotly.newPlot")


def test_figures_ask_their_question_and_show_95_percent_intervals(tiny_results):
    from evalbench import load_results
    from evalbench.report import figures
    from evalbench.report.export import Targets, recommend_each
    from evalbench.report.tables import numbered_front

    df = load_results(tiny_results)
    [rec] = recommend_each(df, Targets(max_quality_loss=0.5)).values()
    ok = with_objectives(df)[lambda t: t.status == "ok"]
    speed = figures.speed_vs_threads(ok, "tiny")
    titles = [note.text for note in speed.layout.annotations]
    assert {"PyTorch", "decode tokens/s", "prefill tokens/s"} <= set(titles) and not [t for t in titles if "=" in t]
    assert speed.layout.title.text.startswith("How does speed scale with threads?")
    decode = [t for t in speed.data if t.error_y.array is not None and max(t.error_y.array) > 0]
    assert decode and all(len(t.error_y.array) == len(t.y) for t in decode)
    quality = figures.quality_vs_speed(ok, rec, "tiny")
    [front] = [t for t in quality.data if t.name == "Pareto front (numbered)"]
    assert sorted(front.text, key=int) == [str(n) for n in numbered_front(rec).front_number]
    [star] = [t for t in quality.data if t.name == "recommended"]
    assert star.x[0] == rec.config.decode_tokens_per_s
    assert any(t.error_x.array is not None and max(t.error_x.array) > 0 for t in quality.data)
    assert quality.layout.xaxis.title.text == "decode tokens/s"


@pytest.mark.parametrize("losses", [[0.0, 0.002, 0.004, 0.009, 0.3], [-0.002, 0.0, 0.02, 1.5]])
def test_the_loss_scale_keeps_runs_near_the_floor_apart_and_orders_them(losses):
    """Losses of 0.2%, 0.4% and 0.9% land well apart on the symmetric log scale, in order, while one of +30% stays
    on the chart: on a linear scale up to 30%, 0.2% and 0.4% would lie 0.7% of the height apart."""
    from evalbench.report.figures import SymLog

    scale = SymLog(0.1)  # percent: linear within 0.1% of 0
    mapped = scale([100 * loss for loss in losses])
    assert list(mapped) == sorted(mapped) and mapped[0] <= 0 <= mapped[-1]
    spread = mapped[-1] - mapped[0]
    assert all(b - a > 0.04 * spread for a, b in itertools.pairwise(mapped) if b != a)
    values, labels = scale.ticks(min(losses) * 100, max(losses) * 100, "%")
    assert labels[values.index(0.0)] == "0%" and "+1%" in labels and values == sorted(values)


def test_the_front_table_is_in_human_units(tiny_results):
    from evalbench import load_results
    from evalbench.report.export import Targets, recommend_each
    from evalbench.report.tables import front_table

    [rec] = recommend_each(load_results(tiny_results), Targets(max_quality_loss=0.5)).values()
    table = front_table(rec)
    assert len(table) == len(rec.frontier) and table["#"].str.endswith("★").sum() == 1
    assert table["peak memory"].str.fullmatch(r"\d+ MiB|\d+\.\d\d GiB").all()  # hundreds of MiB here
    assert table["quality loss (95%)"].str.fullmatch(r"[+-]\d+\.\d+%( \([+-]\d+\.\d+% to [+-]\d+\.\d+%\))?").all()
    assert table["decode tok/s (95%)"].str.fullmatch(r"\d+\.\d \(-?\d+\.\d--?\d+\.\d\)").all()


def _failing_renderer(self, path, **kwargs):
    raise ValueError("no renderer")  # what plotly raises without kaleido or a browser


def _fake_renderer(self, path, **kwargs):
    Path(path).write_bytes(b"\x89PNG")


@pytest.mark.parametrize(
    ("renderer", "png", "pngs"), [(_failing_renderer, True, 0), (_fake_renderer, True, 5), (_fake_renderer, False, 0)]
)
def test_png_export_follows_the_renderer_and_the_flag(renderer, png, pngs, tiny_results, tmp_path, monkeypatch, caplog):
    import plotly.graph_objects as go

    from evalbench import load_results
    from evalbench.report.export import Targets, write_report

    monkeypatch.setattr(go.Figure, "write_image", renderer)
    outcome = write_report(load_results(tiny_results), tmp_path, Targets(max_quality_loss=0.5), png=png)
    written = [p for p in outcome["files"] if p.suffix == ".png"]
    assert len(written) == pngs and sorted(written) == sorted(tmp_path.glob("*.png"))
    assert len(list(tmp_path.glob("*.html"))) == len(FIGURES) + 1  # and report.html, whatever happens to PNG
    skipped = [r.message for r in caplog.records if "PNG figures skipped" in r.message]
    assert len(skipped) == (1 if renderer is _failing_renderer else 0)  # said once, not once per figure
    assert all("kaleido" in message for message in skipped)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["results_dir=/no/such/results"], "results_dir='/no/such/results' does not exist"),
        (["max_quality_loss=-0.1"], "max_quality_loss=-0.1 is invalid; valid: a number >= 0"),
        (["cost=watts"], "unknown column 'watts'; valid: ['ppl_ratio', 's_per_token'"),
        (["quality=bogus"], "unknown column 'bogus'; valid: ['ppl_ratio', 's_per_token'"),
        (["output_dir=/proc/version"], "output_dir='/proc/version' is not writable ("),
    ],
)
def test_bad_input_is_one_line(args, message, tiny_results, tmp_path):
    out = report(f"results_dir={tiny_results}", f"output_dir={tmp_path}", *args, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(f"evalbench-report: error: {message}")


def test_empty_results_folder(tmp_path):
    out = report(f"results_dir={tmp_path}", f"output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert out.returncode == 1 and "holds no records" in out.stderr.strip().splitlines()[-1]


def test_notebook_executes_against_results(tiny_results, monkeypatch):
    monkeypatch.setenv("EVALBENCH_RESULTS_DIR", str(tiny_results))
    notebook = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    from evalbench import load_results
    from evalbench.report.answer import answer_of
    from evalbench.report.export import Targets, recommend_each, section_title

    targets = Targets(max_quality_loss=0.01)  # the notebook's floor
    [(group, rec)] = recommend_each(load_results(tiny_results), targets).items()
    assert "9 runs, 6 ok" in text and answer_of(section_title(group), rec, targets).to_text() in text
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) == len(FIGURES)
    assert sum("text/html" in o.get("data", {}) for o in outputs) >= 2  # the runs and the front tables
