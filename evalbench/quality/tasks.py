"""lm-evaluation-harness tasks run on the converted model in memory, one column per metric and stderr.

A task evalbench ships (``lm_eval_tasks/<name>.yaml``) reads its data from ``quality.data_dir``
when that holds the files; otherwise the name goes to lm-eval's own task, which loads from
the hub. ``task.<name>.source`` says which. A task that cannot run (unknown name, data missing
offline, an error inside lm-eval) becomes ``task.<name>.error`` and a line in
``quality_errors``; the run's other measurements are kept.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig

from evalbench.backends.base import Backend
from evalbench.dataset.text import offline, read_utf8
from evalbench.errors import EvalbenchError, one_line
from evalbench.quality import cache

log = logging.getLogger(__name__)
LOCAL_TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
_SKIPPED_RESULT_KEYS = {"alias", "name", "sample_len", " "}


@dataclass(frozen=True)
class TaskSpec:
    """A task to run: its name, what lm-eval is given (a name or a config), and where its data comes from."""

    name: str
    spec: str | dict[str, Any]
    source: str  # "local:<file>[,<file>...]" or "lm-eval"
    data_files: tuple[Path, ...] = ()


def local_task_config(name: str) -> dict[str, Any] | None:
    path = LOCAL_TASKS_DIR / f"{name}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


@functools.cache
def _task_manager() -> Any:
    """lm-eval's index of its stock tasks, built once per process (about 10 s: it reads every task's YAML)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _stock_task_names() -> frozenset[str]:
    return frozenset(_task_manager().all_tasks)


class TaskError(Exception):
    """A task that cannot run; the message is the one-line error the record keeps."""


def _check_utf8(name: str, files: Iterable[Path]) -> None:
    """Refuse a task data file in another encoding now, naming it (lm-eval would fail inside, naming neither)."""
    for path in files:
        try:
            read_utf8(path, f"quality.tasks: {name} data file")
        except EvalbenchError as exc:
            raise TaskError(str(exc)) from None


def _resolve(name: str, data_dir: str | None) -> TaskSpec:
    config = local_task_config(name)
    if config is not None:
        relative = config["dataset_kwargs"]["data_files"]
        files = (
            {split: (Path(data_dir).expanduser() / rel).resolve() for split, rel in relative.items()}
            if data_dir
            else {}
        )
        if files and all(path.is_file() for path in files.values()):
            _check_utf8(name, files.values())
            config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": {k: str(v) for k, v in files.items()}}
            source = "local:" + ",".join(str(path) for path in files.values())
            return TaskSpec(name, config, source, tuple(files.values()))
        if offline():
            wanted = ", ".join(relative.values())
            raise TaskError(
                f"quality.tasks: {name} needs {wanted} under EVALBENCH_DATA_DIR / quality.data_dir={data_dir!r} "
                "while offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); provide the file or go online"
            )
    if name not in _stock_task_names():
        close = difflib.get_close_matches(name, sorted(_stock_task_names()), n=3)
        hint = f"; close: {close}" if close else ""
        raise TaskError(f"quality.tasks: unknown lm-eval task {name!r}{hint}; list them with `lm-eval ls tasks`")
    return TaskSpec(name, name, "lm-eval")


def _fail(record: dict[str, Any], name: str, message: str) -> None:
    log.error("%s", message)
    record[f"task.{name}.error"] = message
    record.setdefault("quality_errors", []).append(message)


def resolve_tasks(quality: DictConfig, record: dict[str, Any]) -> list[TaskSpec]:
    """The runnable tasks of ``quality.tasks``; each one that cannot run is recorded as failed now."""
    specs = []
    for name in quality.tasks:
        try:
            specs.append(_resolve(str(name), quality.data_dir))
        except TaskError as exc:
            _fail(record, str(name), str(exc))
    return specs


def _columns(results: dict[str, Any], samples: dict[str, Any]) -> dict[str, Any]:
    """``task.<task>.<metric>`` (``<metric>.<filter>`` for filters other than ``none``) and sample counts."""
    columns = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if key in _SKIPPED_RESULT_KEYS or not isinstance(value, int | float):
                continue
            metric, _, filter_name = key.partition(",")
            name = metric if filter_name in ("", "none") else f"{metric}.{filter_name}"
            columns[f"task.{task}.{name}"] = value
        if task in samples:
            columns[f"task.{task}.samples"] = samples[task]["effective"]
    return columns


def _cache_key(task: TaskSpec, quality: DictConfig, location: str, precision: dict[str, Any]) -> str:
    return cache.cache_key(
        {
            "task": task.name,
            "source": task.source,
            "data": [cache.folder_identity(str(path.parent)) for path in task.data_files],
            "model": location,
            "checkpoint": cache.folder_identity(location),
            "precision": precision,
            "limit": quality.limit,
            "bootstrap_iters": quality.bootstrap_iters,
            "lm_eval": importlib.metadata.version("lm-eval"),
            "torch": torch.__version__,
        }
    )


def _evaluate(task: TaskSpec, lm: Any, quality: DictConfig) -> dict[str, Any]:
    from lm_eval import simple_evaluate

    output = simple_evaluate(
        model=lm,
        tasks=[task.spec],
        task_manager=_task_manager(),  # not a fresh index per configuration
        limit=quality.limit,
        bootstrap_iters=quality.bootstrap_iters,
        log_samples=False,
    )
    if not output or not output.get("results"):
        raise TaskError(f"quality.tasks: lm-eval returned no results for {task.name}")
    return _columns(output["results"], output.get("n-samples", {}))


def run_tasks(
    tasks: list[TaskSpec],
    backend: Backend,
    tokenizer: Any,
    quality: DictConfig,
    record: dict[str, Any],
    results_dir: Path,
    location: str,
    precision: dict[str, Any],
) -> None:
    """Run each task on the backend's model (reusing earlier scores of the same configuration); add its columns."""
    lm, begun = None, time.perf_counter()
    for task in tasks:
        prefix = f"task.{task.name}"
        record.update({f"{prefix}.source": task.source, f"{prefix}.limit": quality.limit})
        key = _cache_key(task, quality, location, precision)
        entry = cache.load(results_dir, key) if quality.reuse else None
        if entry is not None:
            record.update(entry["columns"], **{f"{prefix}.from_run": entry["computed_by"]})
            continue
        started = time.perf_counter()
        try:
            if lm is None:
                lm = backend.lm_eval_model(tokenizer, quality.batch_size)
            columns = _evaluate(task, lm, quality)
        except Exception as exc:
            _fail(record, task.name, f"quality.tasks: {task.name} failed: {type(exc).__name__}: {one_line(exc)}")
            continue
        record.update(columns, **{f"{prefix}.time_s": time.perf_counter() - started, f"{prefix}.from_run": None})
        cache.store(results_dir, key, {"columns": columns, "computed_by": record["run_id"]})
    if tasks:
        record["tasks_time_s"] = time.perf_counter() - begun  # all of them, reused ones included
