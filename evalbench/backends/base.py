"""The interface every runtime implements: one model at one precision, loaded, scored and timed.

Quality and speed code above this layer never knows which runtime it talks to. The scored
tokens are the same for every backend: the model's Hugging Face tokenizer makes the ids once
and every backend is fed those ids.
"""

from __future__ import annotations

import functools
import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from hydra.utils import get_class

from evalbench.calibration.base import Calibration
from evalbench.metrics.memory_estimate import MemoryEstimate, ModelShape, Workload
from evalbench.metrics.speed import GenerationTiming
from evalbench.pruning.base import Pruning


@dataclass
class BackendConfig:
    """Settings every backend has; each backend's config (``backends/<name>/config.py``) extends it.

    ``conf/backend/<name>.yaml`` instantiates the config through its ``_target_``; the config
    validates its values at construction and names the :class:`Backend` class it builds.
    """

    backend_class: ClassVar[str]
    name: ClassVar[str]
    runtime_name: ClassVar[str]  # in words, for the report ("llama.cpp")
    kv_cache_optional: ClassVar[bool] = False  # speed.kv_cache=false (recompute the prefix each step) is possible
    prunable: ClassVar[bool] = False  # pruning applies to the weights this backend loads
    calibration_methods: ClassVar[tuple[str, ...]] = ()  # the data-aware quantization methods it runs

    def check_calibration(self, precision: Any, calibration: Calibration) -> None:
        """Raise :class:`~evalbench.errors.EvalbenchError` when ``calibration`` (a method this backend runs) does not
        apply to ``precision``."""

    def logits_bytes(self, precision: Any) -> int:
        """Bytes per ``[position, token]`` value the backend holds for a scoring window's logits (memory estimate).

        By default, a backend whose :meth:`Backend.logits` are :meth:`Backend.log_probs`'s: float32
        logits and the float32 log-probabilities made of them.
        """
        return 8

    def memory_needed(self, precision: Any, shape: ModelShape, workload: Workload, pruning: Pruning) -> MemoryEstimate:
        """What the runtime holds at its peak with the model at ``precision``, and what writing its files needs."""
        raise NotImplementedError

    def logits_memory(self, precision: Any, shape: ModelShape, workload: Workload) -> int:
        """A scoring window's logits as this backend holds them, and the scratch of one chunk of them."""
        return shape.window_logits_bytes(workload.window, self.logits_bytes(precision))

    def describe(self) -> dict[str, Any]:
        """The settings recorded with each run (``backend.<field>``)."""
        return {f"backend.{key}": value for key, value in asdict(self).items()}

    def build(
        self, precision: Any, model_cfg: Any, cache_dir: Path, pruning: Pruning | None = None,
        calibration: Calibration | None = None,
    ) -> Backend:  # fmt: skip
        """The backend, holding nothing yet: :meth:`Backend.load` loads the model (pruned first, if asked; its
        weights quantized with ``calibration``'s tokens, if given)."""
        backend = get_class(self.backend_class)(self, precision, model_cfg, cache_dir)
        backend.pruning = pruning or Pruning()
        backend.calibration = calibration or Calibration()
        return backend


class Backend(ABC):
    """A runtime holding one model at one precision.

    Life cycle: ``load`` (prepare and cache files, then load), ``set_threads``, then any
    number of ``logits``, ``log_probs`` and ``generate`` calls, ``close``.
    """

    name: ClassVar[str]

    def __init__(self, config: BackendConfig, precision: Any, model_cfg: Any, cache_dir: Path) -> None:
        self.config, self.precision, self.model_cfg, self.cache_dir = config, precision, model_cfg, cache_dir
        self.pruning = Pruning()  # applied to the FP32 weights before the precision (prunable backends only)
        self.calibration = Calibration()  # the data-aware quantization's method and tokens (backends that run it)

    @abstractmethod
    def version(self) -> str:
        """The runtime's name and version, recorded as ``backend_version``."""

    @abstractmethod
    def load(self, tokenizer: Any) -> dict[str, Any]:
        """Prepare the model at the precision (converting and caching on disk once, behind a lock) and load it.

        ``tokenizer`` is the model's Hugging Face tokenizer: a backend with its own vocabulary
        checks that it matches and raises :class:`~evalbench.errors.EvalbenchError` otherwise.
        Returns record fields (``load_time_s``, ``convert_time_s``, ``model_file``, ...).
        """

    @abstractmethod
    def set_threads(self, threads: int) -> dict[str, Any]:
        """Use ``threads`` threads, verify the runtime took them, and return the record fields saying so."""

    @abstractmethod
    def log_probs(self, window: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities ``[n, vocab]`` (float32) at each position of ``window`` ``[n]`` (int64).

        Row ``t`` is the distribution of the token after ``window[t]``, with ``window[:t+1]`` as
        context and nothing before the window (a fresh sequence per call).
        """

    def logits(self, window: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[n, vocab]`` at each position of ``window``, in the runtime's own dtype.

        Scoring makes log-probabilities of them a chunk of positions at a time
        (:mod:`evalbench.metrics.chunked`). Log-probabilities are logits too: by default those of
        :meth:`log_probs`; a backend that can returns its raw logits, sparing a float32 copy of the window.
        """
        return self.log_probs(window)

    def prepare_generation(self, prompts: torch.Tensor, new_tokens: int, kv_cache: bool) -> dict[str, Any]:
        """Set up generation of ``new_tokens`` after ``prompts`` before it is timed; return record fields.

        ``kv_cache=False`` recomputes the whole prefix at every step (backends with
        ``kv_cache_optional`` only). A compiling backend compiles here, timed as ``compile_time_s``.
        """
        return {}

    @abstractmethod
    def generate(self, prompts: torch.Tensor, new_tokens: int) -> GenerationTiming:
        """Greedily generate exactly ``new_tokens`` tokens after each row of ``prompts`` ``[batch, prompt]``.

        The rows are different sequences decoded together. The clock is stamped when each
        token is produced (the first stamp closes the prefill); never stops early on EOS.
        """

    @abstractmethod
    def weight_bytes(self) -> int:
        """Bytes of the weights as held in memory (mapped or resident)."""

    @abstractmethod
    def decode_bytes_per_step(self, batch_size: int, context_tokens: float) -> dict[str, float]:
        """Bytes one decode step reads: ``weights``, ``kv_cache`` (at ``context_tokens`` per sequence), ``total``."""

    def lm_eval_model(self, tokenizer: Any, batch_size: int) -> Any:
        """An lm-evaluation-harness model (``lm_eval.api.model.LM``) over this backend, for ``quality.tasks``."""
        from evalbench.quality.lm_eval_model import BackendLM

        return BackendLM(self, tokenizer, batch_size)

    def close(self) -> None:  # noqa: B027 - optional: most backends free on garbage collection
        """Release the model."""


@functools.cache
def runtime_name(backend: str) -> str:
    """The runtime of ``backend`` (a record's ``backend``) in words, from its config class; the name itself
    for a backend this installation does not have."""
    try:
        module = importlib.import_module(f"evalbench.backends.{backend}.config")
    except ImportError:
        return backend
    configs = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, BackendConfig)]
    return next((c.runtime_name for c in configs if getattr(c, "name", None) == backend), backend)
