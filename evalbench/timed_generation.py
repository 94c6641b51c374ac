"""Timing a loaded configuration: greedy generation at each context depth, guarded by the timing lock and the
machine probe, and the decode roofline it is compared with."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
from omegaconf import DictConfig

from evalbench.backends.base import Backend
from evalbench.config import cache_dir
from evalbench.environment import fingerprint
from evalbench.metrics.bandwidth import read_bandwidth
from evalbench.metrics.machine_probe import ProbeReference, ProbeSettings, probe_seconds, timed_with_probe
from evalbench.metrics.memory import peak_rss_bytes, reset_peak_rss
from evalbench.metrics.speed import measure_speed
from evalbench.metrics.timing_lock import timed_alone

log = logging.getLogger(__name__)


def _timed(backend: Backend, prompts: torch.Tensor, speed: DictConfig) -> dict[str, Any]:
    """Warm-ups, then timed greedy generations of ``prompts`` as ``speed`` asks (repeats, time, CV)."""
    return measure_speed(
        backend.generate, prompts, speed.new_tokens, speed.warmup, speed.repeats,
        speed.min_time_s, speed.max_cv, speed.max_time_s,
    )  # fmt: skip


def time_generation(cfg: DictConfig, record: dict[str, Any], backend: Backend, prompts: torch.Tensor) -> None:
    """The run's own speed figures at its first context depth, its peak memory while generating, its warnings."""
    speed = cfg.speed
    record.update(prompt_tokens=prompts.shape[1], new_tokens=speed.new_tokens, speed_repeatability=speed.repeatability)

    def time_section() -> dict[str, Any]:
        reset_peak_rss()  # the peak of generation alone: not the machine probe's buffer around it
        return {**_timed(backend, prompts, speed), "peak_rss_bytes": peak_rss_bytes()}

    def probed_section() -> dict[str, Any]:
        if not speed.machine_probe:
            return time_section()
        reference = ProbeReference(cache_dir(cfg), fingerprint()["machine_id"], cfg.threads)
        return timed_with_probe(time_section, lambda: probe_seconds(cfg.threads), reference, ProbeSettings.of(speed))

    started = time.perf_counter()
    record.update(timed_alone(probed_section) if speed.timing_lock else probed_section())
    record["speed_time_s"] = time.perf_counter() - started  # warm-ups, timed repeats, probes, the lock's wait
    if cfg.threads > (os.cpu_count() or 1):  # allowed by oversubscribe=true
        record["oversubscribed"] = True
        record["speed_warnings"].append(f"threads={cfg.threads} > {os.cpu_count()} logical cores: timings share cores")
    for warning in record["speed_warnings"]:
        log.warning("%s", warning)


DEPTH_FIELDS = ("decode_tokens_per_s", "prefill_tokens_per_s", "ttft_s")


def time_other_depths(cfg: DictConfig, record: dict[str, Any], backend: Backend, batches: list[torch.Tensor]) -> None:
    """Decode and prefill speed after each further context depth of ``speed.prompt_tokens`` (llama-bench's
    ``-d``), timed as the run's own depth (warm-ups, repeats, the timing lock), into ``speed_at_depth``; the
    seconds it took into ``speed_at_depth_time_s``."""
    speed, at_depth, started = cfg.speed, [], time.perf_counter()
    for prompts in batches:

        def time_depth(prompts: torch.Tensor = prompts) -> dict[str, Any]:
            return _timed(backend, prompts, speed)

        fields = timed_alone(time_depth) if speed.timing_lock else time_depth()
        kept = {k: v for k, v in fields.items() if k.startswith(DEPTH_FIELDS) and not k.endswith(("_std", "_cv"))}
        at_depth.append({"prompt_tokens": prompts.shape[1], **kept})
        record["speed_warnings"] += [f"at {prompts.shape[1]} prompt tokens: {w}" for w in fields["speed_warnings"]]
    if at_depth:
        record.update(speed_at_depth=at_depth, speed_at_depth_time_s=time.perf_counter() - started)


def record_roofline(cfg: DictConfig, record: dict[str, Any], backend: Backend) -> None:
    """Decode tokens/s <= bandwidth x batch / bytes per step, at the mean context of the timed steps.

    The bandwidth is the cached probe's; a run decoding faster than that bound allows proves the probe
    was taken in a slow spell, so the bandwidth is measured again (``bandwidth_remeasured``) and cached.
    """
    context = record["prompt_tokens"] + cfg.speed.new_tokens / 2 if cfg.speed.kv_cache else 0  # no cache: none read
    step = backend.decode_bytes_per_step(cfg.batch_size, context)

    def bandwidth(remeasure: bool) -> dict[str, Any]:
        machine = fingerprint()["machine_id"]
        return read_bandwidth(cache_dir(cfg), machine, cfg.threads, step["total"], remeasure)

    probe = bandwidth(cfg.speed.remeasure_bandwidth)
    remeasured = record["decode_tokens_per_s"] > cfg.batch_size * probe["bytes_per_s"] / step["total"]
    if remeasured and not cfg.speed.remeasure_bandwidth:
        log.warning("decode is faster than the cached bandwidth allows: measuring the bandwidth again")
        probe = bandwidth(True)
    record.update(
        memory_bandwidth_bytes_per_s=probe["bytes_per_s"],
        bandwidth_threads=probe["threads"],
        bandwidth_method=probe["method"],
        bandwidth_buffer_bytes=probe["buffer_bytes"],
        bandwidth_file=probe["file"],
        bandwidth_remeasured=bool(remeasured),
        decode_bytes_per_step=step["total"],
        decode_weight_bytes_per_step=step["weights"],
        decode_kv_bytes_per_step=step["kv_cache"],
        roofline_tokens_per_s=cfg.batch_size * probe["bytes_per_s"] / step["total"],
    )
    record["roofline_fraction"] = record["decode_tokens_per_s"] / record["roofline_tokens_per_s"]
