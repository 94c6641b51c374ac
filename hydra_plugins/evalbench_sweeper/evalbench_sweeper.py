"""Hydra's basic sweeper, made to keep going past configurations that cannot even be composed.

Hydra composes every job of a batch before launching any, and one bad value
(``precision=int3``) would abort the whole sweep. Here each job that fails to compose
becomes a failed record with a one-line error, the others run, and the sweep ends
with a non-zero exit status naming how many configurations failed. The launcher is
untouched, so the same sweep runs on Slurm or Ray launchers.
"""

import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.utils import to_absolute_path
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class EvalbenchSweeperConf:
    _target_: str = "hydra_plugins.evalbench_sweeper.evalbench_sweeper.EvalbenchSweeper"
    # No ``from __future__ import annotations`` here: Hydra loads plugins outside sys.modules,
    # where dataclasses cannot resolve string annotations.
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(group="hydra/sweeper", name="evalbench", node=EvalbenchSweeperConf, provider="evalbench")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (Hydra's composition errors span several)."""
    text = str(exc).split("Config search path")[0].strip()
    text = re.sub(r":\s*\n\t", ": ", text)  # "Available options in 'precision':\n\tbf16"
    text = re.sub(r"\n\t", ", ", text)
    return re.sub(r"\s*\n\s*", "; ", text)


def _override_value(overrides: Sequence[str], key: str, default: Any) -> Any:
    """The value ``key`` is given in ``overrides`` (as an int when it is one), else ``default``."""
    for override in overrides:
        name, _, value = override.lstrip("+~").partition("=")
        if name == key:
            return int(value) if value.lstrip("-").isdigit() else value
    return default


class EvalbenchSweeper(BasicSweeper):
    """A :class:`BasicSweeper` that records jobs that fail to compose instead of aborting."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.invalid: list[dict[str, Any]] = []

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        batch = super().get_job_batch()
        legal = []
        for overrides in batch:
            try:
                self.hydra_context.config_loader.load_sweep_config(
                    master_config=self.config, sweep_overrides=list(overrides)
                )
            except Exception as exc:
                self._record_invalid(list(overrides), exc)
            else:
                legal.append(overrides)
        return legal

    def _record_invalid(self, overrides: list[str], exc: Exception) -> None:
        from evalbench.environment import fingerprint
        from evalbench.results import write_record
        from evalbench.runner import new_record

        model = _override_value(overrides, "model.name", _override_value(overrides, "model", self.config.model.name))
        base = OmegaConf.create(
            {
                "model": {"name": model},
                "precision": {"_target_": _override_value(overrides, "precision", "unknown")},
                "threads": _override_value(overrides, "threads", self.config.threads),
                "batch_size": _override_value(overrides, "batch_size", self.config.batch_size),
            }
        )
        record = new_record(base)
        record.update(status="failed", error=one_line(exc), error_type=type(exc).__name__, overrides=overrides)
        record["env"] = fingerprint()
        path = write_record(Path(to_absolute_path(self.config.results_dir)), record)
        print(f"[failed] {' '.join(overrides)}: {record['error']} -> {path}", flush=True)
        self.invalid.append(record)

    def sweep(self, arguments: list[str]) -> Any:
        returns = super().sweep(arguments)
        statuses = [r.return_value for batch in returns for r in batch]
        failed = len(self.invalid) + sum(status != "ok" for status in statuses)
        total = len(self.invalid) + len(statuses)
        results_dir = Path(to_absolute_path(self.config.results_dir)) / "records"
        print(f"evalbench: {total} configurations, {total - failed} ok, {failed} failed; records in {results_dir}")
        if failed:
            sys.exit(1)
        return returns
