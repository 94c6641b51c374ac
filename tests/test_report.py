"""evalbench-report and the analysis notebook on a real (tiny-model) results folder."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pandas as pd
import pytest
from conftest import REPO, run_cli


def report(*args: str, cwd: Path):
    return run_cli(*args, cwd=cwd, program="evalbench-report")


def test_report_writes_every_output(tiny_results, tmp_path):
    out = report(f"results_dir={tiny_results}", f"output_dir={tmp_path}", "max_quality_loss=0.5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "RECOMMENDED: tiny" in out.stdout and "3 failed run(s) left out" in out.stdout
    for name in (
        "runs.csv",
        "frontier.csv",
        "report.md",
        "report.html",
        "speed_vs_threads.html",
        "throughput_vs_batch.html",
        "memory_by_precision.html",
        "plotly.min.js",
    ):
        assert (tmp_path / name).is_file(), name
    assert len(list(tmp_path.glob("quality_vs_speed-tiny-*.html"))) == 1
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 9 and {"on_frontier", "recommended", "ppl_ratio", "s_per_token", "status"} <= set(runs)
    chosen = runs[runs.recommended]
    assert len(chosen) == 1 and chosen.ppl_ratio.iloc[0] <= 1.5  # the floor that was asked for
    clearly_within = runs[(runs.status == "ok") & (runs.ppl_ratio_ci_high <= 1.5)]
    assert chosen.s_per_token.iloc[0] == clearly_within.s_per_token.min()  # no target: the cheapest within the floor
    assert "loss allowed: try INT8" in out.stdout and "no performance target: the cheapest run" in out.stdout
    frontier = pd.read_csv(tmp_path / "frontier.csv")
    assert set(frontier.run_id) == set(runs[runs.on_frontier].run_id)
    assert "memory-bandwidth roofline" in (tmp_path / "throughput_vs_batch.html").read_text()  # dashed, in words
    assert (runs[runs.status == "ok"].roofline_tokens_per_s > 0).all()
    text = (tmp_path / "report.md").read_text()
    assert "## tiny on machine" in text and "| model | backend | precision |" in text and "RECOMMENDED" in text
    page = (tmp_path / "report.html").read_text()
    assert page.count("Plotly.newPlot") == 4 and "<pre>" in page and "RECOMMENDED: tiny" in page
    assert f"open {tmp_path / 'report.html'}" in out.stdout


def test_figures_show_95_percent_intervals_words_and_the_named_recommendation(tiny_results):
    from evalbench import load_results
    from evalbench.analysis.objectives import with_objectives
    from evalbench.report import figures
    from evalbench.report.export import Targets, recommend_each

    df = load_results(tiny_results)
    [rec] = recommend_each(df, Targets(max_quality_loss=0.5)).values()
    ok = with_objectives(df)[lambda t: t.status == "ok"]
    speed = figures.speed_vs_threads(ok)
    titles = [note.text for note in speed.layout.annotations]
    assert "decode tokens/s" in titles and any(t.endswith(", batch 1") for t in titles)
    assert not [t for t in titles if "=" in t] and speed.layout.xaxis.title.text == "threads"
    decode = [t for t in speed.data if t.error_y.array is not None and max(t.error_y.array) > 0]
    assert decode and all(len(t.error_y.array) == len(t.y) for t in decode)
    quality = figures.quality_vs_speed(ok, rec.frontier, rec.config, rec.floor)
    chosen = rec.config
    label = f"recommended: {chosen.configuration}, {chosen.threads} thr, batch {chosen.batch_size}"
    assert label in [note.text for note in quality.layout.annotations]
    [front] = [t for t in quality.data if t.name == "Pareto front"]
    assert len(front.text) == len(rec.frontier) and all(" thr, batch " in text for text in front.text)
    assert any(t.error_x.array is not None and max(t.error_x.array) > 0 for t in quality.data)
    assert quality.layout.xaxis.title.text == "decode tokens/s"


def _failing_renderer(self, path, **kwargs):
    raise ValueError("no renderer")  # what plotly raises without kaleido or a browser


def _fake_renderer(self, path, **kwargs):
    Path(path).write_bytes(b"\x89PNG")


@pytest.mark.parametrize(
    ("renderer", "png", "pngs"), [(_failing_renderer, True, 0), (_fake_renderer, True, 4), (_fake_renderer, False, 0)]
)
def test_png_export_follows_the_renderer_and_the_flag(renderer, png, pngs, tiny_results, tmp_path, monkeypatch, caplog):
    import plotly.graph_objects as go

    from evalbench import load_results
    from evalbench.report.export import Targets, write_report

    monkeypatch.setattr(go.Figure, "write_image", renderer)
    outcome = write_report(load_results(tiny_results), tmp_path, Targets(max_quality_loss=0.5), png=png)
    written = [p for p in outcome["files"] if p.suffix == ".png"]
    assert len(written) == pngs and sorted(written) == sorted(tmp_path.glob("*.png"))
    assert len(list(tmp_path.glob("*.html"))) == 5  # the 4 figures and report.html, whatever happens to PNG
    skipped = [r.message for r in caplog.records if "PNG of" in r.message]
    assert len(skipped) == (4 if renderer is _failing_renderer else 0)
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
    assert "9 runs, 6 ok" in text and "RECOMMENDED: tiny" in text
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) == 4
