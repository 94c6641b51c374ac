"""Before anything loads: the model's shape from its config, what a run asks of it, the reference it is
compared with, and whether the configuration and that reference fit in the memory available."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from evalbench.config import cache_dir, prompt_depths
from evalbench.configuration import Configuration, named_configuration, reference_name
from evalbench.metrics.memory_estimate import MemoryEstimate, ModelShape, Workload, check_fits, with_process
from evalbench.model.loader import checkpoint_dtype, load_config
from evalbench.model.source import resolve_source

REFERENCE_REMEDY = "quality.reference=<a precision that fits, e.g. q8_0> or null"


def model_shape(cfg: DictConfig) -> ModelShape:
    """The model's size and shape, from its config alone."""
    config = load_config(cfg.model, cache_dir(cfg))
    gguf_source = resolve_source(cfg.model).gguf_file is not None
    return ModelShape.of(config, checkpoint_dtype(config), gguf_source, cfg.model.trust_remote_code)


def workload(cfg: DictConfig) -> Workload:
    """What the run asks of the model at once: its batch, its deepest generation, its scoring window."""
    sequence = max(prompt_depths(cfg.speed)) + cfg.speed.new_tokens if cfg.speed.enabled else 0
    return Workload(cfg.batch_size, sequence, cfg.perplexity.context if cfg.perplexity.enabled else 0)


def reference_configuration(cfg: DictConfig, shape: ModelShape, available: int) -> Configuration | None:
    """The reference configuration (``quality.reference``; ``auto``: the model's own precision), or None."""
    if cfg.quality.reference is None:
        return None

    def fits(name: str) -> bool:
        return with_process(named_configuration(name).memory_needed(shape, workload(cfg))).total <= available

    return named_configuration(reference_name(cfg.quality.reference, cfg.model, cache_dir(cfg), fits))


def check_memory(
    cfg: DictConfig, configuration: Configuration, shape: ModelShape, reference: Configuration | None,
    record: dict[str, Any], available: int,
) -> MemoryEstimate | None:  # fmt: skip
    """Record the configuration's estimated peak memory and the reference's; refuse the configuration, in one line
    naming the runtime's figure, when it exceeds what is available. Returns the reference's estimate."""
    needed = with_process(configuration.memory_needed(shape, workload(cfg)))
    record.update(needed.to_record(), memory_available_bytes=available, memory_estimate_runtime=needed.runtime)
    reference_needed = None if reference is None else with_process(reference.memory_needed(shape, workload(cfg)))
    if reference_needed is not None:
        record.update(reference_needed.to_record("reference_memory_estimate"))
    if cfg.memory_check:
        check_fits(needed, available)
    return reference_needed
