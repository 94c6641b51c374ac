"""Configurations that Hydra cannot compose (``precision=int3``) still become failed records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import to_absolute_path
from omegaconf import OmegaConf

from evalbench.errors import one_line


def override_value(overrides: Sequence[str], key: str, default: Any) -> Any:
    """The value ``key`` is given in ``overrides`` (as an int when it is one), else ``default``."""
    for override in overrides:
        name, _, value = override.lstrip("+~").partition("=")
        if name == key:
            return int(value) if value.lstrip("-").isdigit() else value
    return default


def record_composition_failure(overrides: Sequence[str], exc: BaseException, defaults: Any) -> dict[str, Any]:
    """Write a failed record for ``overrides``; ``defaults`` is the config the overrides apply to."""
    from evalbench.environment import fingerprint
    from evalbench.results import write_record
    from evalbench.runner import new_record

    model = override_value(overrides, "model.name", override_value(overrides, "model", defaults.model.name))
    base = OmegaConf.create(
        {
            "model": {"name": model},
            "backend": {"_target_": override_value(overrides, "backend", defaults.backend._target_)},
            "precision": {"_target_": override_value(overrides, "precision", defaults.precision._target_)},
            "threads": override_value(overrides, "threads", defaults.threads),
            "batch_size": override_value(overrides, "batch_size", defaults.batch_size),
        }
    )
    record = new_record(base)
    record.update(status="failed", error=one_line(exc), error_type=type(exc).__name__, overrides=list(overrides))
    record["env"] = fingerprint()
    results_dir = Path(to_absolute_path(str(override_value(overrides, "results_dir", defaults.results_dir))))
    record["record_file"] = str(write_record(results_dir, record))
    return record
