"""The ``evalbench-report`` command: read a results folder, recommend, and write the report."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from evalbench.cli import CONFIG_DIR
from evalbench.config import Targets
from evalbench.errors import EvalbenchError


@dataclass
class ReportConfig(Targets):
    """``conf/report.yaml``: where to read and write, and the targets."""

    results_dir: str = "results"
    output_dir: str = "${results_dir}/report"
    png: bool = True


ConfigStore.instance().store(name="report_schema", node=ReportConfig)


def run_report(cfg: DictConfig) -> dict[str, object]:
    """Load ``cfg.results_dir``, recommend per model, machine and token set, write ``cfg.output_dir``."""
    import warnings

    from evalbench.report.export import write_report
    from evalbench.results import load_results, writable_folder

    results_dir = Path(to_absolute_path(cfg.results_dir))
    if not results_dir.is_dir():
        raise EvalbenchError(
            f"results_dir={cfg.results_dir!r} does not exist; run a sweep first or point to its folder"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_results(results_dir)
    for warning in caught:
        print(f"evalbench-report: warning: {warning.message}", file=sys.stderr)
    if df.empty:
        raise EvalbenchError(
            f"results_dir={cfg.results_dir!r} holds no records (expected {results_dir}/records/*.json)"
        )
    targets = Targets(**{f.name: cfg[f.name] for f in fields(Targets)})
    output_dir = writable_folder(Path(to_absolute_path(cfg.output_dir)), "output_dir", cfg.output_dir)
    return write_report(df, output_dir, targets, png=cfg.png)


def recommendations_text(outcome: dict[str, object], with_trace: bool = True) -> str:
    """Each group's answer (the report's answer card as text), with how it was chosen unless told not to."""
    return "\n\n".join(answer.to_text(with_trace) for answer in outcome["answers"].values())


def report_after_sweep(cfg: DictConfig) -> None:
    """The main command's last lines: the recommendation of every group in ``results_dir`` and the report's HTML.

    A results folder the report cannot use (no successful run, a quality column no run measured)
    is said in one line; the records stay as they are.
    """
    report = cfg.report
    if not report.enabled:
        return
    settings = OmegaConf.create({**OmegaConf.to_container(report, resolve=True), "results_dir": cfg.results_dir})
    try:
        outcome = run_report(settings)
    except EvalbenchError as exc:
        print(f"evalbench: no recommendation: {exc}", flush=True)
        return
    print(f"\n{recommendations_text(outcome, with_trace=False)}\n")
    floor = f"max_quality_loss={report.max_quality_loss:g}; evalbench-report for other targets"
    print(f"report ({floor}): {outcome['html']}")


# Its own folder: the main app's groups (quality, model, ...) would capture report keys of the same name.
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "report"), config_name="report")
def _app(cfg: DictConfig) -> None:
    try:
        outcome = run_report(cfg)
    except EvalbenchError as exc:
        print(f"evalbench-report: error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(recommendations_text(outcome) + "\n")
    print(f"report written to {Path(to_absolute_path(cfg.output_dir))}: " + ", ".join(p.name for p in outcome["files"]))
    print(f"open {outcome['html']}")


def main() -> None:
    _app()
