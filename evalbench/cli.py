"""The ``evalbench`` command: a Hydra app where one run measures one configuration."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from evalbench.config import CONFIG_DIR, register_configs
from evalbench.errors import EvalbenchError

register_configs()


def _quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-task INFO lines; errors still show
    warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")


def _head(record: dict[str, Any]) -> str:
    configuration = f"{record['model']} {record.get('backend', 'torch')} {record['precision']}"
    return f"{configuration} threads={record['threads']} batch_size={record['batch_size']}"


def summary(record: dict[str, Any]) -> str:
    """One line per configuration, printed as it finishes."""
    head = f"[{record['status']}] {_head(record)}"
    if record["status"] != "ok":
        return f"{head}: {record['error']} -> {record['record_file']}"
    for error in record.get("quality_errors", []):
        head += f"\n    quality metric failed: {error}"
    parts = []
    if record.get("perplexity") is not None:
        parts.append(f"ppl {record['perplexity']:.3f} ({record['eval_tokens']} tokens)")
    if record.get("decode_tokens_per_s") is not None:
        parts.append(
            f"decode {record['decode_tokens_per_s']:.1f} tok/s, prefill {record['prefill_tokens_per_s']:.1f} tok/s"
        )
    return f"{head}: {', '.join(parts)} -> {record['record_file']}"


def _measured(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` measured and recorded; a failure of any kind, foreseen or not, is its failed record."""
    from evalbench.runner import record_failure, run_configuration

    overrides = list(HydraConfig.get().overrides.task)
    try:
        return run_configuration(cfg, overrides)
    except EvalbenchError as exc:  # nowhere to write records: stop the sweep, nothing can be kept
        print(f"evalbench: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # outside the measuring (a bug, a failing resolver): still this configuration's
        return record_failure(cfg, exc, Path(to_absolute_path(cfg.results_dir)), overrides)


def _job(cfg: DictConfig) -> str:
    """One configuration: its record and summary line; for a single run, the report and the exit status."""
    _quiet_libraries()
    record = _measured(cfg)
    if record.get("skipped"):
        print(f"[skipped] {_head(record)}: already recorded in {record['record_file']} (force=true re-runs)")
        return "skipped"
    if record.get("tasks_retried"):
        print(f"[tasks retried] {_head(record)}: the failed quality.tasks ran again")
    print(summary(record), flush=True)
    errors = [record["error"]] if record["status"] != "ok" else record.get("quality_errors", [])
    single_run = HydraConfig.get().mode == RunMode.RUN
    if single_run:  # a sweep reports once, at its end (the evalbench sweeper)
        from evalbench.report.cli import report_after_sweep

        report_after_sweep(cfg)
    if errors and single_run:
        for error in errors:
            print(f"evalbench: error: {error}", file=sys.stderr)
        sys.exit(1)
    if record["status"] == "ok" and errors:
        return "quality failed"  # counted apart by the sweeper: the run's other measurements stand
    return record["status"]


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _app(cfg: DictConfig) -> str:
    return _job(cfg)


def _check_single_run(argv: list[str]) -> None:
    """Compose a single run's config first, so that a bad value fails as one line and a record.

    Sweeps (``-m``, or a preset's sweep with a list given: ``sweep=sample precision=fp32,int8``) are checked job
    by job by the evalbench sweeper; Hydra's own flags are left to Hydra.
    """
    from evalbench.composition import check_composed, is_sweep, record_composition_failure

    if any(arg.startswith(("-", "hydra.", "hydra/")) for arg in argv) or is_sweep(argv):
        return
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="evalbench"):
        try:
            check_composed(compose("config", overrides=argv, return_hydra_config=True), argv)
        except Exception as exc:
            record = record_composition_failure(argv, exc, compose("config"))
            print(f"evalbench: error: {record['error']}", file=sys.stderr)
            sys.exit(1)


def _check_results_dir(argv: list[str]) -> None:
    """Hydra writes its logs under results_dir before any job runs: a folder that cannot be written
    must fail as one line, not as Hydra's traceback (each run checks it again). The value checked
    is the one Hydra uses: the last given."""
    from evalbench.composition import override_value
    from evalbench.results import ensure_writable

    results_dir = override_value(argv, "results_dir", "results")
    if isinstance(results_dir, bool) or not isinstance(results_dir, str | int | float):
        return  # a sweep over folders, or null: left to Hydra and to each run
    results_dir = str(results_dir)
    if "$" in results_dir:  # an interpolation: left to the run to resolve and check
        return
    try:
        ensure_writable(results_dir)
    except EvalbenchError as exc:
        print(f"evalbench: error: {exc}", file=sys.stderr)
        sys.exit(1)


# Hydra's flags that print something and run nothing: no folder may be created for them.
_INFO_FLAGS = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--shell-completion", "-sc")


def main() -> None:
    logging.getLogger("evalbench").setLevel(logging.INFO)
    if not any(arg in _INFO_FLAGS for arg in sys.argv[1:]):
        _check_results_dir(sys.argv[1:])
        _check_single_run(sys.argv[1:])
    _app()
