"""Typed schema of the Hydra config; ``conf/`` holds the values, one group per module."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, ListConfig, OmegaConf

from evalbench.affinity import AFFINITIES
from evalbench.errors import EvalbenchError

_PACKAGE = Path(__file__).resolve().parent
# An installed wheel carries conf/ inside the package; a source checkout has it beside the package.
CONFIG_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"


@dataclass
class ModelConfig:
    """A causal LM: a hub id or local directory, optionally a GGUF file inside it (``evalbench/model``)."""

    name: str = MISSING
    path: str | None = None
    gguf_file: str | None = None
    package: str | None = None  # a Python package whose folder holds the checkpoint (the sample model)
    install: str | None = None  # the command that installs ``package``
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass
class DatasetConfig:
    """The text perplexity is measured on, read locally or from the hub (``evalbench/dataset``)."""

    name: str = "wikitext2"
    data_dir: str | None = None  # a folder laid out like shared/data; set from EVALBENCH_DATA_DIR
    local_file: str = "wikitext-2-raw/wiki.test.raw"
    hub_path: str = "Salesforce/wikitext"
    hub_name: str | None = "wikitext-2-raw-v1"
    split: str = "test"
    text_field: str = "text"


@dataclass
class PerplexityConfig:
    """Sliding-window perplexity (``evalbench/metrics/perplexity.py``)."""

    enabled: bool = True
    max_tokens: int | None = None  # 0 or null: the whole split
    context: int = 1024
    stride: int | None = None  # null: equal to context (non-overlapping windows)
    reuse: bool = True  # reuse a result computed for the same model, precision and tokens


@dataclass
class QualityConfig:
    """Distribution distance from a reference precision, and lm-eval tasks (``evalbench/quality``)."""

    # a precision of any backend (conf/precision/<name>.yaml), auto (the model's own), or null (no distribution metrics)
    reference: str | None = "auto"
    top_k: int = 64  # log-probabilities the reference keeps per scored token, besides the tail mass
    tail_samples: int = 32  # tokens drawn from the reference's tail per scored token (0: KLD is a lower bound)
    tasks: list[str] = field(default_factory=list)  # lm-eval task names, e.g. [lambada_openai]
    data_dir: str | None = None  # where tasks evalbench ships read their data; set from EVALBENCH_DATA_DIR
    limit: int | None = None  # examples per task (null: all)
    batch_size: int = 8  # lm-eval's batch size for loglikelihood requests
    bootstrap_iters: int = 1000  # lm-eval's bootstrap draws for stderrs without a closed form (0: none)
    reuse: bool = True  # reuse task scores computed for the same model, precision, task and limit


@dataclass
class SpeedConfig:
    """Greedy generation timing (``evalbench/metrics/speed.py``)."""

    enabled: bool = True
    # Context depth(s) (llama-bench -d): an integer, or a list whose first is the run's figure and each
    # other is timed too (``speed_at_depth``); an axis with -m speed.prompt_tokens=128,2048. Any: a list.
    prompt_tokens: Any = 128
    new_tokens: int = 64
    warmup: int = 1
    repeats: int = 3  # timed generations at least
    min_time_s: float = 0.0  # ... and at least this many timed seconds
    max_cv: float = 0.05  # a figure varying more (coefficient of variation) is warned about ...
    max_time_s: float = 0.0  # ... and re-timed until under max_cv or this many timed seconds (0: never)
    repeatability: float = 0.1  # sweep-to-sweep variation of timings on this machine (relative 95% half-width)
    roofline: bool = True  # record the decode roofline from the machine's measured read bandwidth
    timing_lock: bool = True  # one timed section at a time on this machine, across evalbench processes
    machine_probe: bool = True  # probe the machine before and after timing; re-time during a slow spell
    machine_probe_max_slowdown: float = 1.2  # probe time over the machine's best above this: a slow spell
    machine_probe_retimes: int = 2  # at most this many re-timings ...
    machine_probe_wait_s: float = 60.0  # ... each after waiting up to this long for the probe to recover
    remeasure_bandwidth: bool = False  # measure the bandwidth again instead of using the cached figure
    kv_cache: bool = True  # false: recompute the whole prefix at every decode step (backend=torch)


# Each target's unit, and the units a value may be written with by mistake (``2GiB``): the factor to the plain number.
_TARGET_UNITS: dict[str, tuple[str, dict[str, float]]] = {
    "max_quality_loss": ("a fraction: 0.01 = 1% worse than the baseline", {"%": 0.01}),
    "min_decode_tokens_per_s": ("tokens per second", {"tok/s": 1, "tokens/s": 1, "t/s": 1}),
    "max_memory_bytes": (
        "bytes",
        {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40},
    ),
    "max_ttft_s": ("seconds", {"s": 1, "ms": 1e-3}),
}
_WITH_UNIT = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(\S*)\s*", re.IGNORECASE)


def target_value(key: str, value: Any) -> float | None:
    """Target ``key`` (``max_memory_bytes``, ``report.max_memory_bytes``) as a number; null where it means no target.

    A number written with a unit (``2GiB``, ``20tok/s``) or in quotes is refused with the plain number to give.
    """
    name = key.rsplit(".", 1)[-1]
    if value is None and name != "max_quality_loss":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    unit, factors = _TARGET_UNITS[name]
    plain = _plain_number(value, factors)
    if plain is not None:
        number, has_unit = plain
        wrong = f"{key}={value} is invalid: targets take no unit" if has_unit else f"{key}='{value}' is text"
        raise EvalbenchError(f"{wrong}; valid: {key}={number} ({unit})")
    optional = ", or null (no target)" if name != "max_quality_loss" else ""
    shown = "null" if value is None else value
    raise EvalbenchError(f"{key}={shown} is invalid; valid: a number ({unit}){optional}")


def _plain_number(value: Any, factors: dict[str, float]) -> tuple[str, bool] | None:
    """The plain number a text stands for, written with a known unit (``2GiB``) or none ('20'), and whether it had
    a unit; None for anything else."""
    match = _WITH_UNIT.fullmatch(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and unit not in factors):
        return None
    return f"{float(match.group(1)) * factors.get(unit, 1):.12g}", bool(unit)


@dataclass
class Targets:
    """The quality floor and performance targets of a recommendation (fields of ``recommend``)."""

    # Any, not float: a value with a unit (2GiB) must reach __post_init__, which says so in one line,
    # where Hydra would refuse it with its error dump.
    max_quality_loss: Any = 0.01  # the floor: 1% more perplexity than the baseline
    min_decode_tokens_per_s: Any = None
    max_memory_bytes: Any = None
    max_ttft_s: Any = None
    quality: str = "perplexity"
    cost: str = "s_per_token"

    def __post_init__(self) -> None:
        for name in _TARGET_UNITS:
            setattr(self, name, target_value(name, getattr(self, name)))


@dataclass
class SweepReportConfig(Targets):
    """The report written at the end of ``evalbench`` over everything in ``results_dir`` (``evalbench/report``)."""

    enabled: bool = True
    output_dir: str = "${results_dir}/report"
    png: bool = False  # PNG files need kaleido and a browser: evalbench-report png=true writes them


@dataclass
class EvalbenchConfig:
    """One configuration to measure: a model on a backend at a precision, thread count and batch size."""

    model: ModelConfig = field(default_factory=ModelConfig)
    backend: Any = MISSING  # instantiated through its ``_target_`` (``evalbench/backends``)
    precision: Any = MISSING  # through its ``_target_`` (``evalbench/backends/<runtime>/precision``)
    pruning: Any = MISSING  # instantiated through its ``_target_`` (``evalbench/pruning``)
    calibration: Any = MISSING  # through its ``_target_`` (``evalbench/calibration``)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    threads: int = 1
    batch_size: int = 1
    results_dir: str = "results"
    cache_dir: str = "~/.cache/evalbench"
    force: bool = False  # measure even when this configuration is already recorded on this machine
    isolation: str = "process"  # "process": each configuration in a fresh process; "none": in this one
    timeout_s: float = 7200.0  # isolation=process: a measuring process still running after this is killed
    oversubscribe: bool = False  # allow threads > this machine's logical cores (timings then share cores)
    affinity: str = "none"  # "cores": the measuring process bound to `threads` physical cores (evalbench/affinity.py)
    memory_check: bool = True  # refuse a configuration whose estimated memory exceeds what is available
    report: SweepReportConfig = field(default_factory=SweepReportConfig)


def precision_backends() -> dict[str, str]:
    """Each precision in ``conf/precision/`` and the backend whose precision it is."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    return {
        path.stem: get_class(OmegaConf.load(path)["_target_"]).backend
        for path in sorted((CONFIG_DIR / "precision").glob("*.yaml"))
    }


def _required(key: str, example: str, needed_by: str = "this launcher") -> None:
    """``${evalbench_required:key,example[,needed_by]}``: a value with no safe default, refused until given.

    (``???`` cannot say it where the schema or a plugin has a default: OmegaConf's merge keeps the default.)
    """
    raise EvalbenchError(f"{key} must be given for {needed_by}; e.g. {key}={example}")


def register_configs() -> None:
    """Register the schema that ``conf/config.yaml`` extends, and evalbench's config resolvers."""
    ConfigStore.instance().store(name="evalbench_schema", node=EvalbenchConfig)
    if not OmegaConf.has_resolver("evalbench_required"):
        OmegaConf.register_new_resolver("evalbench_required", _required)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise EvalbenchError(message)


def cache_dir(cfg: Any) -> Path:
    """``cfg.cache_dir`` as an absolute path (relative to where evalbench was started, as Hydra resolves it)."""
    from hydra.utils import to_absolute_path

    return Path(to_absolute_path(str(Path(cfg.cache_dir).expanduser())))


def prompt_depths(speed: Any) -> list[int]:
    """``speed.prompt_tokens`` as a list of depths, the run's own first; one line naming a bad value."""
    value = speed.prompt_tokens
    depths = list(value) if isinstance(value, list | ListConfig) else [value]
    valid = depths and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in depths)
    _check(
        bool(valid) and len(set(depths)) == len(depths),
        f"speed.prompt_tokens={value} is invalid; valid: an integer >= 1, or a list of different ones ([128,2048])",
    )
    return depths


def validate(cfg: Any) -> None:
    """Check the values Hydra's types cannot; raise :class:`EvalbenchError` naming the bad one."""
    cores = os.cpu_count() or 1
    _check(
        cfg.threads >= 1, f"threads={cfg.threads} is invalid; valid: an integer >= 1 (this machine has {cores} cores)"
    )
    _check(
        cfg.threads <= cores or cfg.oversubscribe,
        f"threads={cfg.threads} is more than this machine's {cores} logical cores, so its timings would share cores; "
        f"valid: 1..{cores} (oversubscribe=true measures anyway)",
    )
    _check(cfg.timeout_s > 0, f"timeout_s={cfg.timeout_s} is invalid; valid: a number of seconds > 0")
    _check(
        cfg.isolation in ("none", "process"),
        f"isolation={cfg.isolation} is invalid; valid: none (in-process, model reused) or process",
    )
    _check(
        cfg.affinity in AFFINITIES,
        f"affinity={cfg.affinity} is invalid; valid: none, or cores (one thread per physical core)",
    )
    _check(cfg.batch_size >= 1, f"batch_size={cfg.batch_size} is invalid; valid: an integer >= 1")
    for name in _TARGET_UNITS:  # the report's: refused before measuring, as any other bad value
        target_value(f"report.{name}", cfg.report[name])
    ppl, speed = cfg.perplexity, cfg.speed
    _check(
        ppl.max_tokens is None or ppl.max_tokens == 0 or ppl.max_tokens >= 2,
        f"perplexity.max_tokens={ppl.max_tokens} is invalid; valid: 0 or null (whole split) or an integer >= 2",
    )
    _check(ppl.context >= 2, f"perplexity.context={ppl.context} is invalid; valid: an integer >= 2")
    _check(
        ppl.stride is None or 1 <= ppl.stride <= ppl.context,
        f"perplexity.stride={ppl.stride} is invalid; valid: null or 1..perplexity.context ({ppl.context})",
    )
    quality = cfg.quality
    precisions = list(precision_backends())
    _check(
        quality.reference in (None, "auto", *precisions),
        f"quality.reference={quality.reference} is invalid; valid: auto (the model's own precision), null, "
        f"or a precision of any backend: {', '.join(precisions)}",
    )
    _check(quality.top_k >= 1, f"quality.top_k={quality.top_k} is invalid; valid: an integer >= 1")
    _check(quality.tail_samples >= 0, f"quality.tail_samples={quality.tail_samples} is invalid; valid: an integer >= 0")
    _check(
        quality.limit is None or quality.limit >= 1,
        f"quality.limit={quality.limit} is invalid; valid: null (every example) or an integer >= 1",
    )
    _check(quality.batch_size >= 1, f"quality.batch_size={quality.batch_size} is invalid; valid: an integer >= 1")
    _check(
        quality.bootstrap_iters >= 0,
        f"quality.bootstrap_iters={quality.bootstrap_iters} is invalid; valid: an integer >= 0",
    )
    prompt_depths(speed)
    _check(speed.new_tokens >= 2, f"speed.new_tokens={speed.new_tokens} is invalid; valid: an integer >= 2")
    _check(speed.warmup >= 0, f"speed.warmup={speed.warmup} is invalid; valid: an integer >= 0")
    _check(speed.repeats >= 1, f"speed.repeats={speed.repeats} is invalid; valid: an integer >= 1")
    _check(
        speed.machine_probe_max_slowdown >= 1,
        f"speed.machine_probe_max_slowdown={speed.machine_probe_max_slowdown} is invalid; valid: a number >= 1",
    )
    for key in ("min_time_s", "max_cv", "max_time_s", "repeatability", "machine_probe_retimes", "machine_probe_wait_s"):
        value = speed[key]
        _check(value >= 0, f"speed.{key}={value} is invalid; valid: a number >= 0")
