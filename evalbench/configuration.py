"""A configuration: its backend settings, precision and pruning, instantiated and checked before anything loads;
and the reference configuration every run's quality is compared with.

``quality.reference`` names a precision of any backend (``fp32``, ``bf16``, ``f16``, ``q8_0``, ``ort_fp32``,
...), run at its backend's default settings, or ``auto``: the model's own precision, i.e. the
checkpoint's ``dtype`` for a Hugging Face checkpoint (``bf16`` for most current models, ``fp32``),
and for a float16 checkpoint or a GGUF source its weights upcast to ``fp32`` in torch when they fit
in memory, else ``f16`` through llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from evalbench.affinity import core_cpus
from evalbench.backends.base import BackendConfig
from evalbench.calibration.base import Calibration
from evalbench.config import CONFIG_DIR, precision_backends, validate
from evalbench.errors import EvalbenchError
from evalbench.metrics.memory_estimate import MemoryEstimate, ModelShape, Workload
from evalbench.model.loader import checkpoint_dtype, load_config
from evalbench.model.source import resolve_source
from evalbench.precision.base import Precision
from evalbench.pruning.base import Pruning

AUTO_REFERENCE = "auto"
# A checkpoint's dtype -> the references that score its weights as stored, the first that fits chosen.
UPCAST_REFERENCES = ("fp32", "f16")  # exact in torch at fp32; else llama.cpp's f16 (torch has no fp16 precision)
DTYPE_REFERENCES = {torch.float32: ("fp32",), torch.bfloat16: ("bf16",), torch.float16: UPCAST_REFERENCES}


@dataclass(frozen=True)
class Configuration:
    """A configuration's backend settings and precision, instantiated and checked before anything loads."""

    backend: BackendConfig
    precision: Precision
    pruning: Pruning
    calibration: Calibration = field(default_factory=Calibration)

    @property
    def label(self) -> str:
        """``<backend> <precision>``: how the analysis names a configuration without levers."""
        return f"{self.backend.name} {self.precision.name}"

    def memory_needed(self, shape: ModelShape, workload: Workload) -> MemoryEstimate:
        return self.backend.memory_needed(self.precision, shape, workload, self.pruning)

    def describe(self) -> dict[str, Any]:
        """Record fields naming it; equal descriptions measure the same model."""
        return {
            **self.precision.describe(),
            "backend": self.backend.name,
            **self.backend.describe(),
            **self.pruning.describe(),
            **self.calibration.describe(),
        }


def _instantiate(group: str, node: DictConfig) -> Any:
    try:
        return instantiate(node)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, EvalbenchError):
            raise cause from None
        raise EvalbenchError(f"{group} config is invalid: {cause or exc}") from exc


def check_configuration(cfg: DictConfig) -> Configuration:
    """Validate ``cfg`` and instantiate its backend and precision; raise one line on anything invalid."""
    validate(cfg)
    backend: BackendConfig = _instantiate("backend", cfg.backend)
    precision: Precision = _instantiate("precision", cfg.precision)
    if precision.backend != backend.name:
        valid = [name for name, owner in precision_backends().items() if owner == backend.name]
        raise EvalbenchError(
            f"precision={precision.name} is a {precision.backend} precision, not a {backend.name} one; "
            f"valid for {backend.name}: {', '.join(valid)}"
        )
    precision.check_supported()
    pruning: Pruning = _instantiate("pruning", cfg.pruning)
    calibration: Calibration = _instantiate("calibration", cfg.calibration)
    _check_levers(cfg, backend, pruning)
    _check_calibration(backend, precision, calibration)
    return Configuration(backend, precision, pruning, calibration)


def _check_calibration(backend: BackendConfig, precision: Precision, calibration: Calibration) -> None:
    """Refuse a calibration method the backend does not run, naming those that do."""
    if calibration.enabled and calibration.method not in backend.calibration_methods:
        offered = ", ".join(f"backend={name} ({', '.join(methods)})" for name, methods in calibration_offers().items())
        raise EvalbenchError(
            f"calibration={calibration.method} is not offered by backend={backend.name}; valid: calibration=none, "
            f"or {offered}"
        )
    backend.check_calibration(precision, calibration)


def calibration_offers() -> dict[str, tuple[str, ...]]:
    """Each backend in ``conf/backend/`` that runs calibration methods, and the methods."""
    offers = {}
    for path in sorted((CONFIG_DIR / "backend").glob("*.yaml")):
        try:
            config = get_class(str(OmegaConf.load(path)["_target_"]))
        except (ImportError, AttributeError, ValueError):
            continue
        if config.calibration_methods:
            offers[config.name] = config.calibration_methods
    return offers


def _check_levers(cfg: DictConfig, backend: BackendConfig, pruning: Pruning) -> None:
    """Refuse a lever the backend does not have, naming the backends that do."""
    if pruning.enabled and not backend.prunable:
        raise EvalbenchError(
            f"pruning={pruning.method} applies to the weights backend=torch loads, not backend={backend.name}; "
            "valid: pruning=none, or backend=torch"
        )
    if not cfg.speed.kv_cache and not backend.kv_cache_optional:
        raise EvalbenchError(
            f"speed.kv_cache=false is not offered by backend={backend.name} (it always caches); valid: "
            "speed.kv_cache=true, or backend=torch"
        )
    if not cfg.speed.kv_cache and getattr(backend, "compile", False):
        raise EvalbenchError(
            "backend.compile=true compiles the decode step over a static KV cache; valid: speed.kv_cache=true"
        )
    if cfg.affinity == "cores":
        core_cpus(cfg.threads)  # raises when the machine has fewer physical cores


def _node(group: str, name: str) -> DictConfig:
    """``conf/<group>/<name>.yaml`` without its defaults list (the backend a precision selects)."""
    node = OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml")
    node.pop("defaults", None)
    return node


def named_configuration(precision_name: str) -> Configuration:
    """``precision_name`` at its backend's default settings, unpruned."""
    precision: Precision = _instantiate("precision", _node("precision", precision_name))
    backend: BackendConfig = _instantiate("backend", _node("backend", precision.backend))
    return Configuration(backend, precision, Pruning())


def reference_name(requested: str, model_cfg: Any, cache_dir: Path, fits: Any) -> str:
    """The precision ``quality.reference`` names: itself, or for ``auto`` the model's own (see the module).

    ``fits(name)`` says whether that configuration's estimated memory fits.
    """
    if requested != AUTO_REFERENCE:
        return requested
    if resolve_source(model_cfg).gguf_file is not None:  # de-quantized: float32 values
        candidates = UPCAST_REFERENCES
    else:
        candidates = DTYPE_REFERENCES.get(checkpoint_dtype(load_config(model_cfg, cache_dir)), ("fp32",))
    return next((name for name in candidates if fits(name)), candidates[-1])
