"""Hydra's basic sweeper, made to keep going past configurations that cannot even be composed.

Hydra composes every job of a batch before launching any, and one bad value
(``precision=int3``) would abort the whole sweep. Here each job that fails to compose
becomes a failed record with a one-line error, the others run, and the sweep ends
with a non-zero exit status naming how many configurations failed. A job that raises
(an error evalbench did not foresee) is that configuration's failed record too, not the
sweep's end. The launcher is only wrapped, so the same sweep runs on Slurm or Ray launchers.
"""

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.utils import to_absolute_path


@dataclass
class EvalbenchSweeperConf:
    _target_: str = "hydra_plugins.evalbench_sweeper.evalbench_sweeper.EvalbenchSweeper"
    # No ``from __future__ import annotations`` here: Hydra loads plugins outside sys.modules,
    # where dataclasses cannot resolve string annotations.
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(group="hydra/sweeper", name="evalbench", node=EvalbenchSweeperConf, provider="evalbench")


def _cause(exc: BaseException) -> str:
    """The innermost message of a chain of wrapped errors, on one line (an evalbench check's own line)."""
    from evalbench.errors import innermost_evalbench_error, one_line

    cause = innermost_evalbench_error(exc)
    if cause is not None:
        return str(cause)
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    return one_line(exc)


def _stop(message: str) -> None:
    """One line and exit status 1: nothing ran, so nothing is lost."""
    print(f"evalbench: error: {message}", file=sys.stderr)
    sys.exit(1)


def _record_raised(job: JobReturn, sweep_config: Any) -> str:
    """Write the failed record of a job that raised; its summary line (said without a record if none can be written)."""
    from evalbench.cli import summary
    from evalbench.composition import record_composition_failure
    from evalbench.errors import one_line
    from evalbench.runner import record_failure

    exc, overrides = job._return_value, list(job.overrides or [])
    try:
        if job.cfg is None:  # a launcher that did not say which config ran: named from the overrides
            return summary(record_composition_failure(overrides, exc, sweep_config))
        return summary(record_failure(job.cfg, exc, Path(to_absolute_path(job.cfg.results_dir)), overrides))
    except Exception as write_error:
        return f"[failed] {' '.join(overrides)}: {type(exc).__name__}: {one_line(exc)} (no record: {write_error})"


class _RecordingLauncher:
    """The configured launcher, each job of it that raised turned into a failed record (status ``failed``)."""

    def __init__(self, launcher: Launcher, sweep_config: Any) -> None:
        self.launcher, self.sweep_config = launcher, sweep_config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if not job_overrides:  # every job of the batch failed to compose (some launchers refuse an empty batch)
            return []
        return [self._settled(job) for job in self.launcher.launch(job_overrides, initial_job_idx)]

    def _settled(self, job: JobReturn) -> JobReturn:
        if job.status != JobStatus.FAILED:
            return job
        print(_record_raised(job, self.sweep_config), flush=True)
        return dataclasses.replace(job, status=JobStatus.COMPLETED, _return_value="failed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)


class EvalbenchSweeper(BasicSweeper):
    """A :class:`BasicSweeper` that records jobs that fail to compose instead of aborting."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict[str, str]] = None) -> None:  # noqa: UP045
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.invalid: list[dict[str, Any]] = []

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        from evalbench.composition import check_composed, record_composition_failure

        legal = []
        for overrides in super().get_job_batch():
            try:
                job = self.hydra_context.config_loader.load_sweep_config(
                    master_config=self.config, sweep_overrides=list(overrides)
                )
                check_composed(job, overrides)
            except Exception as exc:
                record = record_composition_failure(overrides, exc, self.config)
                print(f"[failed] {' '.join(overrides)}: {record['error']} -> {record['record_file']}", flush=True)
                self.invalid.append(record)
            else:
                legal.append(overrides)
        return legal

    def setup(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().setup(*args, **kwargs)  # instantiates the launcher from hydra.launcher
        except Exception as exc:
            _stop(f"hydra/launcher could not be set up: {_cause(exc)}")
        self.launcher = _RecordingLauncher(self.launcher, self.config)

    def sweep(self, arguments: list[str]) -> Any:
        try:
            returns = super().sweep(arguments)
        except Exception as exc:  # the launcher itself failed (jobs record their own failures)
            _stop(f"hydra/launcher could not run the jobs: {type(exc).__name__}: {_cause(exc)}")
        statuses = [r.return_value for batch in returns for r in batch]
        partial = sum(status == "quality failed" for status in statuses)
        skipped = sum(status == "skipped" for status in statuses)
        failed = len(self.invalid) + sum(status not in ("ok", "skipped", "quality failed") for status in statuses)
        total = len(self.invalid) + len(statuses)
        results_dir = Path(to_absolute_path(self.config.results_dir)) / "records"
        quality = f", {partial} with a failed quality metric" if partial else ""
        resumed = f" ({skipped} already recorded, skipped)" if skipped else ""
        print(
            f"evalbench: {total} configurations, {total - failed - partial} ok{resumed}, {failed} failed{quality}; "
            f"records in {results_dir}"
        )
        from evalbench.report.cli import report_after_sweep

        report_after_sweep(self.config)
        if failed or partial:
            sys.exit(1)
        return returns
