"""Measure one configuration end to end and write its record; failures become failed records.

One configuration, top to bottom (:func:`_measure`): check it, read the tokens it needs,
store the quality reference if missing, load the backend, score, time, roofline, tasks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import get_class, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from evalbench.affinity import bound
from evalbench.backends.base import Backend
from evalbench.calibration.base import Calibration
from evalbench.composition import check_composed, select_value
from evalbench.config import cache_dir, prompt_depths
from evalbench.configuration import Configuration, check_configuration
from evalbench.dataset.text import load_text
from evalbench.environment import fingerprint
from evalbench.errors import EvalbenchError, one_line
from evalbench.isolation import measure_in_child
from evalbench.memory_plan import REFERENCE_REMEDY, check_memory, model_shape, reference_configuration
from evalbench.metrics.memory import peak_rss_bytes, release_freed_memory, reset_peak_rss
from evalbench.metrics.memory_estimate import available_bytes, check_fits
from evalbench.metrics.perplexity import Corpus, tokenize
from evalbench.metrics.speed import prompt_batch
from evalbench.model import reuse
from evalbench.model.loader import load_tokenizer
from evalbench.model.source import ModelSource, resolve_source
from evalbench.progress import logged_step
from evalbench.pruning.base import Pruning
from evalbench.pruning.calibration import calibration_ids
from evalbench.quality import scoring
from evalbench.quality.tasks import resolve_tasks, run_tasks
from evalbench.results import ensure_writable, find_recorded, write_record
from evalbench.timed_generation import record_roofline, time_generation, time_other_depths

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _group_name(cfg: DictConfig, group: str, attribute: str = "name") -> str:
    """A group's name as the config gives it (``attribute``), else its class's; the raw value when broken."""
    name = select_value(cfg, f"{group}.{attribute}", None)
    target = str(select_value(cfg, f"{group}._target_", "unknown"))
    if not name and not re.fullmatch(r"[\w.]+\.\w+", target):  # not a class path (precision=int3): said as given
        return target
    try:
        return str(name or getattr(get_class(target), attribute))
    except (ImportError, AttributeError, ValueError):
        return target


def new_record(cfg: DictConfig) -> dict[str, Any]:
    """The identifying fields of a run, filled in before anything can fail."""
    model = select_value(cfg, "model.name", "unknown")
    backend, precision = _group_name(cfg, "backend"), _group_name(cfg, "precision")
    threads, batch_size = select_value(cfg, "threads", "unknown"), select_value(cfg, "batch_size", "unknown")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model}-{backend}-{precision}-t{threads}-b{batch_size}")
    return {
        "run_id": f"{stamp}-{slug}-{uuid.uuid4().hex[:8]}",
        "status": "running",
        "error": None,
        "error_type": None,
        "model": model,
        "backend": backend,
        "precision": precision,
        "pruning_method": _group_name(cfg, "pruning", "method"),
        "calibration": _group_name(cfg, "calibration", "method"),
        "kv_cache": select_value(cfg, "speed.kv_cache", True),
        "threads": threads,
        "batch_size": batch_size,
        "started_at": _now(),
    }


def _needed_tokens(cfg: DictConfig) -> int | None:
    """How many leading tokens of the text this run uses (None: all of them)."""
    speed = cfg.batch_size * max(prompt_depths(cfg.speed)) if cfg.speed.enabled else 0
    if cfg.perplexity.enabled:
        return max(cfg.perplexity.max_tokens, speed) if cfg.perplexity.max_tokens else None
    return speed or 1


def _read_tokens(cfg: DictConfig, record: dict[str, Any]) -> tuple[Any, ModelSource, Corpus, str]:
    """The model's tokenizer, the dataset's leading tokens this run needs (as every backend is fed them) and
    the whole text."""
    text = load_text(cfg.dataset)
    record["dataset_source"] = text.source
    tokenizer, source = load_tokenizer(cfg.model, cache_dir(cfg))
    record.update(model_location=source.location, gguf_file=source.gguf_file)
    return tokenizer, source, tokenize(text.text, tokenizer, _needed_tokens(cfg)), text.text


def _calibrate_pruning(pruning: Pruning, text: str, corpus: Corpus, tokenizer: Any, record: dict[str, Any]) -> None:
    """Give a pruning method that reads activations its calibration tokens: the text's last ones."""
    if not pruning.calibration_tokens:
        return
    pruning.calibration, overlaps = calibration_ids(text, len(corpus.text), tokenizer, pruning.calibration_tokens)
    record["pruning_calibration_overlaps_scored"] = overlaps
    if overlaps:
        log.warning("pruning calibrates on tokens perplexity also scores (the whole text is scored)")


def _calibrate_quantization(calibration: Calibration, text: str, corpus: Corpus, tokenizer: Any) -> None:
    """Give a data-aware quantization its calibration tokens: the text's last ones, as for pruning."""
    if not calibration.enabled:
        return
    ids, overlaps = calibration_ids(text, len(corpus.text), tokenizer, calibration.tokens)
    if len(ids) < calibration.tokens:
        raise EvalbenchError(
            f"calibration={calibration.method} asks for {calibration.tokens} tokens (calibration.samples x "
            f"calibration.sequence_length) but the dataset has {len(ids)}; valid: fewer samples or shorter sequences"
        )
    calibration.set_tokens(ids, overlaps)
    if overlaps:
        log.warning("calibration=%s reads tokens perplexity also scores (the whole text is scored)", calibration.method)


def _plan_scoring(
    cfg: DictConfig, record: dict[str, Any], results_dir: Path, corpus: Corpus, location: str,
    config: dict[str, Any], reference: Configuration | None,
) -> scoring.ScoringPlan | None:  # fmt: skip
    """What this run scores; None when it scores nothing (disabled, or reused from an earlier run)."""
    if not cfg.perplexity.enabled:
        return None
    record.update(ppl_context=cfg.perplexity.context, ppl_max_tokens=cfg.perplexity.max_tokens or None)
    plan = scoring.plan(cfg, results_dir, corpus, location, config, reference)
    if reference is not None:
        record.update(reference_configuration=reference.label, reference_is_this_run=plan.same_as_reference)
    record["ppl_stride"] = plan.stride
    return None if scoring.reuse_cached(plan, results_dir, record) else plan


def _reference_backend(cfg: DictConfig, reference: Configuration, tokenizer: Any) -> Backend:
    """The reference configuration's backend, loaded with this run's threads: it builds the stored reference."""
    backend = reference.backend.build(reference.precision, cfg.model, cache_dir(cfg))
    backend.load(tokenizer)
    backend.set_threads(cfg.threads)
    return backend


def _load_backend(cfg: DictConfig, configuration: Configuration, tokenizer: Any, record: dict[str, Any]) -> Backend:
    """The backend with the model loaded at the precision; in-process sweeps reuse the last one."""
    key = reuse.reuse_key(
        OmegaConf.to_container(cfg.model, resolve=True), configuration.describe(), str(cache_dir(cfg))
    )
    started = time.perf_counter()
    kept = reuse.take(key) if cfg.isolation == "none" else None
    reused = kept is not None
    release_freed_memory()  # an earlier configuration's model, dropped by take()
    if kept is None:
        reset_peak_rss()  # load_peak_rss_bytes: the peak while loading and converting
        backend = configuration.backend.build(
            configuration.precision, cfg.model, cache_dir(cfg), configuration.pruning, configuration.calibration
        )
        what = f"loading {record['model']} at {record['backend']} {record['precision']} (converting unless cached)"
        with logged_step(log, what):
            fields = backend.load(tokenizer)
        kept = reuse.LoadedBackend(key, backend, {**fields, "load_peak_rss_bytes": peak_rss_bytes()})
        if cfg.isolation == "none":
            reuse.keep(kept)
    record.update(kept.fields, backend_version=kept.backend.version(), model_reused=reused)
    record["load_step_time_s"] = time.perf_counter() - started  # converting unless cached, loading; ~0 when reused
    return kept.backend


def _measure(cfg: DictConfig, record: dict[str, Any], results_dir: Path) -> None:
    configuration = check_configuration(cfg)
    record.update(
        configuration.describe(),
        load_mode=getattr(configuration.backend, "load_mode", None),
        measured_pid=os.getpid(),
        sweep_pid=record.get("sweep_pid", os.getpid()),
    )
    with bound(cfg.affinity, cfg.threads) as placement:
        record.update(placement)
        _measure_configuration(cfg, configuration, record, results_dir)


def _measure_configuration(
    cfg: DictConfig, configuration: Configuration, record: dict[str, Any], results_dir: Path
) -> None:
    tasks = resolve_tasks(cfg.quality, record)
    tokenizer, source, corpus, text = _read_tokens(cfg, record)
    _calibrate_pruning(configuration.pruning, text, corpus, tokenizer, record)
    _calibrate_quantization(configuration.calibration, text, corpus, tokenizer)
    depths = prompt_depths(cfg.speed) if cfg.speed.enabled else []
    prompt_sets = [prompt_batch(corpus.ids, cfg.batch_size, depth) for depth in depths]  # each too long: refused now
    prompts = prompt_sets[0] if prompt_sets else None
    shape, available = model_shape(cfg), available_bytes()
    reference = reference_configuration(cfg, shape, available) if cfg.perplexity.enabled else None
    plan = _plan_scoring(cfg, record, results_dir, corpus, source.location, configuration.describe(), reference)
    reference_needed = check_memory(cfg, configuration, shape, reference, record, available)

    def reference_backend(reference: Configuration) -> Backend:
        """The reference's backend, loaded: refused in one line first when it would not fit."""
        if cfg.memory_check and reference_needed is not None:
            what = f"the reference {reference.label} (quality.reference={cfg.quality.reference})"
            check_fits(reference_needed, available, what, REFERENCE_REMEDY)
        return _reference_backend(cfg, reference, tokenizer)

    computed_reference = plan is not None and scoring.prepare_reference(plan, reference_backend, record["run_id"])
    backend = _load_backend(cfg, configuration, tokenizer, record)
    record.update(backend.set_threads(cfg.threads))
    if prompts is not None:  # compiles, if asked: a precision that cannot fails before anything is scored
        record.update(backend.prepare_generation(prompts, cfg.speed.new_tokens, cfg.speed.kv_cache))
    release_freed_memory()  # what loading and converting freed
    reset_peak_rss()  # peak_rss_bytes covers inference on the converted model, not loading
    record["weight_bytes"] = backend.weight_bytes()
    if plan is not None:
        scoring.score(plan, backend.logits, record, results_dir, computed_reference)
        record["perplexity_peak_rss_bytes"] = peak_rss_bytes()
        release_freed_memory()
        reset_peak_rss()  # peak_rss_bytes below is generation's alone, comparable across runs
    if prompts is not None:
        time_generation(cfg, record, backend, prompts)
        time_other_depths(cfg, record, backend, prompt_sets[1:])
    record.setdefault("peak_rss_bytes", peak_rss_bytes())  # generation's own, else scoring's
    if prompts is not None and cfg.speed.roofline:
        record_roofline(cfg, record, backend)  # after the peak: the bandwidth probe allocates 1 GiB
    run_tasks(tasks, backend, tokenizer, cfg.quality, record, results_dir, source.location, configuration.describe())


def config_key(cfg: DictConfig) -> str:
    """A hash of the resolved configuration, less where results and caches go and whether to force. A class
    (``_target_``) counts by its name, not its module: moving code changes no measurement."""
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    for key in ("results_dir", "cache_dir", "force", "timeout_s", "report", "memory_check"):
        resolved.pop(key, None)
    return hashlib.sha256(json.dumps(_class_names(resolved), sort_keys=True, default=str).encode()).hexdigest()[:20]


def _class_names(node: Any) -> Any:
    """``node`` with every ``_target_`` cut to its class name (``evalbench.backends.torch.precision.bf16.BF16``:
    ``BF16``)."""
    if isinstance(node, dict):
        return {k: v.rsplit(".", 1)[-1] if k == "_target_" else _class_names(v) for k, v in node.items()}
    return [_class_names(value) for value in node] if isinstance(node, list) else node


def _fail(record: dict[str, Any], exc: BaseException) -> None:
    if isinstance(exc, EvalbenchError):
        record.update(status="failed", error=one_line(exc), error_type=type(exc).__name__)
    else:
        log.error("configuration failed", exc_info=exc)  # a bug or an unforeseen failure: its traceback logged
        record.update(status="failed", error=f"{type(exc).__name__}: {one_line(exc)}", error_type=type(exc).__name__)


def _measure_guarded(cfg: DictConfig, record: dict[str, Any], results_dir: Path) -> None:
    """:func:`_measure`, turning any failure into ``status=failed`` with a one-line error."""
    try:
        _measure(cfg, record, results_dir)
        record["status"] = "ok"
    except Exception as exc:
        _fail(record, exc)


def _measure_record(cfg: DictConfig, record: dict[str, Any], results_dir: Path) -> None:
    """Check the configuration here, then measure it here or, with ``isolation=process``, in a fresh process."""
    try:  # a bad value or a missing model fails before any process is spawned
        check_configuration(cfg)
        resolve_source(cfg.model)
    except Exception as exc:
        _fail(record, exc)
        return
    if cfg.isolation == "process":
        measure_in_child(_measure_guarded, cfg, record, results_dir, cfg.timeout_s)
    else:
        _measure_guarded(cfg, record, results_dir)


def _retry_failed_tasks(cfg: DictConfig, done: dict[str, Any], results_dir: Path) -> dict[str, Any]:
    """Run again only the tasks that failed in ``done``, keeping its other measurements, and rewrite it."""
    failed = [str(name) for name in cfg.quality.tasks if f"task.{name}.error" in done]
    retry = OmegaConf.merge(cfg, {"perplexity": {"enabled": False}, "speed": {"enabled": False}})
    retry.quality.tasks = failed
    fresh = new_record(cfg)
    _measure_record(retry, fresh, results_dir)
    if fresh["status"] != "ok":
        return {**done, "quality_errors": [fresh["error"]]}
    prefixes = tuple(f"task.{name}." for name in failed)
    kept = {k: v for k, v in done.items() if not k.startswith(prefixes) and k not in ("quality_errors", "record_file")}
    merged = {**kept, **{k: v for k, v in fresh.items() if k.startswith(prefixes)}, "tasks_retried_at": _now()}
    if fresh.get("quality_errors"):
        merged["quality_errors"] = fresh["quality_errors"]
    merged["record_file"] = str(write_record(results_dir, merged))
    return merged


def _recorded_config(cfg: DictConfig) -> dict[str, Any]:
    """The configuration a record keeps: resolved, or as written when it cannot be resolved (Hydra's node left out)."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException:
        config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("hydra", None)
    return config


def record_failure(
    cfg: DictConfig, exc: BaseException, results_dir: Path, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Write and return ``cfg``'s failed record for ``exc``, raised before or around its measuring."""
    record = new_record(cfg)
    _fail(record, exc)
    record.update(finished_at=_now(), overrides=list(overrides), config=_recorded_config(cfg), env=fingerprint())
    record["record_file"] = str(write_record(results_dir, record))
    return record


def run_configuration(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Measure ``cfg`` and write its record (status ``ok`` or ``failed``); raises only when
    ``results_dir`` cannot be written (:class:`EvalbenchError`). ``overrides``: the command line's.

    A configuration already recorded successfully in ``results_dir`` on this machine is not
    measured again (unless ``force=true``): its record comes back with ``skipped=True``; lm-eval
    tasks that failed in it are run again (``tasks_retried=True``). With ``isolation=process`` it
    is measured in a fresh process of its own.
    """
    results_dir = Path(to_absolute_path(cfg.results_dir))
    ensure_writable(results_dir)  # raises: with nowhere to write, nothing can be recorded
    try:  # before the configuration's key, which resolves every value
        check_composed(cfg, overrides)
    except EvalbenchError as exc:
        return record_failure(cfg, exc, results_dir, overrides)
    key = config_key(cfg)
    done = None if cfg.force else find_recorded(results_dir, key, fingerprint()["machine_id"])
    if done is not None and done.get("quality_errors"):
        return {**_retry_failed_tasks(cfg, done, results_dir), "tasks_retried": True}
    if done is not None:
        return {**done, "skipped": True}
    record = new_record(cfg)
    record.update(config_key=key, isolation=cfg.isolation, sweep_pid=os.getpid())
    started = time.perf_counter()
    _measure_record(cfg, record, results_dir)
    record.update(finished_at=_now(), duration_s=time.perf_counter() - started)
    record.update(config=_recorded_config(cfg), overrides=list(overrides), env=fingerprint())
    record["record_file"] = str(write_record(results_dir, record))
    return record
