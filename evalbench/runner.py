"""Measure one configuration end to end and write its record; failures become failed records."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from evalbench.config import validate
from evalbench.dataset.text import load_text
from evalbench.environment import fingerprint
from evalbench.errors import EvalbenchError, one_line
from evalbench.isolation import measure_in_child
from evalbench.metrics.bandwidth import read_bandwidth, roofline
from evalbench.metrics.memory import peak_rss_bytes, release_freed_memory, reset_peak_rss, weight_bytes
from evalbench.metrics.perplexity import tokenize
from evalbench.metrics.speed import measure_speed, prompt_batch
from evalbench.model import reuse
from evalbench.model.loader import load_model
from evalbench.precision.base import Precision
from evalbench.quality import scoring
from evalbench.quality.tasks import resolve_tasks, run_tasks
from evalbench.results import ensure_writable, find_recorded, write_record

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _precision_name(cfg: DictConfig) -> str:
    """The precision's name, read from its class; the raw value when the config is broken."""
    target = str(OmegaConf.select(cfg, "precision._target_", default="unknown"))
    module, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr).name
    except (ImportError, AttributeError, ValueError):
        return target


def new_record(cfg: DictConfig) -> dict[str, Any]:
    """The identifying fields of a run, filled in before anything can fail."""
    model = OmegaConf.select(cfg, "model.name", default=None, throw_on_missing=False) or "unknown"
    precision = _precision_name(cfg)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model}-{precision}-t{cfg.threads}-b{cfg.batch_size}")
    return {
        "run_id": f"{stamp}-{slug}-{uuid.uuid4().hex[:8]}",
        "status": "running",
        "error": None,
        "error_type": None,
        "model": model,
        "precision": precision,
        "threads": cfg.threads,
        "batch_size": cfg.batch_size,
        "started_at": _now(),
    }


def _instantiate_precision(cfg: DictConfig) -> Precision:
    try:
        return instantiate(cfg.precision)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, EvalbenchError):
            raise cause from None
        raise EvalbenchError(f"precision config is invalid: {cause or exc}") from exc


def _set_threads(threads: int) -> int:
    torch.set_num_threads(threads)
    actual = torch.get_num_threads()
    if actual != threads:
        raise EvalbenchError(f"threads={threads} could not be set: torch.get_num_threads() reports {actual}")
    return actual


def _measure(cfg: DictConfig, record: dict[str, Any], results_dir: Path) -> None:
    validate(cfg)
    precision = _instantiate_precision(cfg)
    description = precision.describe()
    record.update(description)
    precision.check_supported()
    record["torch_num_threads"] = _set_threads(cfg.threads)
    tasks = resolve_tasks(cfg.quality, record)

    text = load_text(cfg.dataset)
    record["dataset_source"] = text.source

    cache_dir = to_absolute_path(str(Path(cfg.cache_dir).expanduser()))
    key = reuse.reuse_key(OmegaConf.to_container(cfg.model, resolve=True), description, cache_dir)
    kept = reuse.take(key) if cfg.isolation == "none" else None
    release_freed_memory()  # an earlier configuration's model, dropped by take()
    if kept is None:
        started = time.perf_counter()
        model, tokenizer, source = load_model(cfg.model, cache_dir)
        loaded = {"load_time_s": time.perf_counter() - started}
        loaded["parameters"] = sum(p.numel() for p in model.parameters())
    else:
        model, tokenizer, source, loaded = kept.model, kept.tokenizer, kept.source, kept.fields
    record.update(loaded, model_location=source.location, gguf_file=source.gguf_file, model_reused=kept is not None)
    corpus = tokenize(text.text, tokenizer)
    plan, computed_reference = None, False
    if cfg.perplexity.enabled:
        record.update(ppl_context=cfg.perplexity.context, ppl_max_tokens=cfg.perplexity.max_tokens or None)
        plan = scoring.plan(cfg, results_dir, corpus, source.location, description)
        record["ppl_stride"] = plan.stride
        if scoring.reuse_cached(plan, results_dir, record):
            plan = None
        else:  # the reference comes from the FP32 model: a kept, converted one cannot give it
            fp32 = model if kept is None else (lambda: load_model(cfg.model, cache_dir)[0])
            computed_reference = scoring.prepare_reference(plan, fp32, record["run_id"])

    if kept is None:
        started = time.perf_counter()
        model = precision.apply(model)
        loaded["convert_time_s"] = time.perf_counter() - started
        if cfg.isolation == "none":
            reuse.keep(reuse.ConvertedModel(key, model, tokenizer, source, loaded))
    record["convert_time_s"] = loaded["convert_time_s"]
    release_freed_memory()  # the FP32 originals of converted weights
    reset_peak_rss()  # peak_rss_bytes covers inference on the converted model, not loading
    record["weight_bytes"] = weight_bytes(model)

    if plan is not None:
        scoring.score(plan, model, record, results_dir, computed_reference)
        record["perplexity_peak_rss_bytes"] = peak_rss_bytes()
        release_freed_memory()
        reset_peak_rss()  # peak_rss_bytes below is generation's alone, comparable across runs
    if cfg.speed.enabled:
        prompts = prompt_batch(corpus.ids, cfg.batch_size, cfg.speed.prompt_tokens)
        record.update(prompt_tokens=cfg.speed.prompt_tokens, new_tokens=cfg.speed.new_tokens)
        speed = cfg.speed
        record.update(
            measure_speed(
                model, prompts, speed.new_tokens, speed.warmup, speed.repeats,
                speed.min_time_s, speed.max_cv, speed.max_time_s,
            )
        )  # fmt: skip
        for warning in record["speed_warnings"]:
            log.warning("%s", warning)
    record["peak_rss_bytes"] = peak_rss_bytes()
    if cfg.speed.enabled and cfg.speed.roofline:
        _record_roofline(cfg, record, model)  # after the peak: the bandwidth probe allocates 1 GiB
    run_tasks(tasks, model, tokenizer, cfg.quality, record, results_dir, source.location, description)


def config_key(cfg: DictConfig) -> str:
    """A hash of the resolved configuration, less where results and caches go and whether to force."""
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    for key in ("results_dir", "cache_dir", "force"):
        resolved.pop(key, None)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _record_roofline(cfg: DictConfig, record: dict[str, Any], model: torch.nn.Module) -> None:
    cache_dir = to_absolute_path(str(Path(cfg.cache_dir).expanduser()))
    bandwidth = read_bandwidth(cache_dir, fingerprint()["machine_id"], cfg.threads, cfg.speed.remeasure_bandwidth)
    record.update(memory_bandwidth_bytes_per_s=bandwidth["bytes_per_s"], bandwidth_file=bandwidth["file"])
    speed = cfg.speed
    record.update(roofline(model, cfg.batch_size, speed.prompt_tokens, speed.new_tokens, bandwidth["bytes_per_s"]))
    record["roofline_fraction"] = record["decode_tokens_per_s"] / record["roofline_tokens_per_s"]


def _measure_guarded(cfg: DictConfig, record: dict[str, Any], results_dir: Path) -> None:
    """:func:`_measure`, turning any failure into ``status=failed`` with a one-line error."""
    try:
        _measure(cfg, record, results_dir)
        record["status"] = "ok"
    except EvalbenchError as exc:
        record.update(status="failed", error=one_line(exc), error_type=type(exc).__name__)
    except Exception as exc:
        log.exception("configuration failed")
        record.update(status="failed", error=f"{type(exc).__name__}: {one_line(exc)}", error_type=type(exc).__name__)


def run_configuration(cfg: DictConfig) -> dict[str, Any]:
    """Measure ``cfg`` and write its record (status ``ok`` or ``failed``); raises only when
    ``results_dir`` cannot be written (:class:`EvalbenchError`).

    A configuration already recorded successfully in ``results_dir`` on this machine is not
    measured again (unless ``force=true``): its record comes back with ``skipped=True``.
    With ``isolation=process`` it is measured in a fresh process of its own.
    """
    results_dir = Path(to_absolute_path(cfg.results_dir))
    ensure_writable(results_dir)  # raises: with nowhere to write, nothing can be recorded
    key = config_key(cfg)
    done = None if cfg.force else find_recorded(results_dir, key, fingerprint()["machine_id"])
    if done is not None:
        return {**done, "skipped": True}
    record = new_record(cfg)
    record.update(config_key=key, isolation=cfg.isolation)
    started = time.perf_counter()
    if cfg.isolation == "process":
        measure_in_child(_measure_guarded, cfg, record, results_dir)
    else:
        _measure_guarded(cfg, record, results_dir)
    record.update(finished_at=_now(), duration_s=time.perf_counter() - started)
    record["config"] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    record["env"] = fingerprint()
    record["record_file"] = str(write_record(results_dir, record))
    return record
