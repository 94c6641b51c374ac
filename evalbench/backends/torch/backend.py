"""PyTorch: the checkpoint loaded through Transformers at the precision's dtype, pruned and converted in memory.

Generation is eager, or compiled with ``torch.compile`` over a static KV cache (``backend.compile``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
import transformers

from evalbench.backends.base import Backend
from evalbench.backends.torch import compile as compiled
from evalbench.backends.torch.config import TorchConfig
from evalbench.errors import EvalbenchError
from evalbench.metrics import chunked
from evalbench.metrics.bandwidth import bytes_per_decode_step
from evalbench.metrics.memory import weight_bytes
from evalbench.metrics.speed import GenerationTiming, time_generation
from evalbench.model.loader import load_model
from evalbench.progress import logged_step

log = logging.getLogger(__name__)


def forward_logits(model: torch.nn.Module, window: torch.Tensor) -> torch.Tensor:
    """Next-token logits ``[n, vocab]`` (the model's dtype) at each position of ``window``, in one forward pass."""
    with torch.inference_mode():
        return model(input_ids=window.unsqueeze(0), use_cache=False).logits[0]


def forward_log_probs(model: torch.nn.Module, window: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities ``[n, vocab]`` (float32) at each position of ``window``, in one forward pass."""
    return chunked.log_softmax(forward_logits(model, window))


def model_logits(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` as the scoring function the perplexity and divergence code takes."""
    return functools.partial(forward_logits, model)


def model_log_probs(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model``'s float32 log-probabilities per window (logits too, to the scoring code)."""
    return functools.partial(forward_log_probs, model)


class TorchBackend(Backend):
    """A Transformers model at one of evalbench's torch precisions, eager or compiled."""

    name = "torch"
    config: TorchConfig
    model: torch.nn.Module

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.options: dict[str, Any] = {}  # generate's options, set by prepare_generation

    def version(self) -> str:
        return f"torch {torch.__version__}, transformers {transformers.__version__}"

    def load(self, tokenizer: Any) -> dict[str, Any]:
        started = time.perf_counter()
        dtype = self.load_dtype()
        model = load_model(self.model_cfg, self.cache_dir, dtype, read_into_memory=self.config.load_mode == "read")
        loaded = time.perf_counter()
        with logged_step(log, f"pruning ({self.pruning.method})", self.pruning.enabled):
            pruned = self.pruning.apply(model)
        parameters = sum(p.numel() for p in model.parameters())
        with logged_step(log, f"converting to {self.precision.name}", self.precision.weight_bits < 32):
            self.model = self.precision.apply(model)
        return {
            "load_time_s": loaded - started,
            "convert_time_s": time.perf_counter() - loaded,
            "parameters": parameters,
            "load_dtype": str(dtype).removeprefix("torch."),
            **pruned,
        }

    def load_dtype(self) -> torch.dtype | str:
        """The dtype the weights load at: the precision's own, or the checkpoint's (``"auto"``) for pruning,
        which reads the weights as stored. Never a float32 copy a 16-bit or quantized precision does not use."""
        return "auto" if self.pruning.enabled else self.precision.load_dtype

    def set_threads(self, threads: int) -> dict[str, Any]:
        torch.set_num_threads(threads)
        actual = torch.get_num_threads()
        if actual != threads:
            raise EvalbenchError(f"threads={threads} could not be set: torch.get_num_threads() reports {actual}")
        return {"torch_num_threads": actual}

    def logits(self, window: torch.Tensor) -> torch.Tensor:
        return forward_logits(self.model, window)

    def log_probs(self, window: torch.Tensor) -> torch.Tensor:
        return forward_log_probs(self.model, window)

    def prepare_generation(self, prompts: torch.Tensor, new_tokens: int, kv_cache: bool) -> dict[str, Any]:
        self.options = {"use_cache": kv_cache}
        if not self.config.compile:
            return {}
        compiled.configure_inductor(self.config, self.cache_dir)
        self.options.update(cache_implementation="static", compile_config=compiled.compile_config(self.config))
        before, started = compiled.counters(), time.perf_counter()
        with compiled.compiler_errors(self.precision.name):
            self.generate(prompts, new_tokens)  # compiles the decode step at the timed shapes
        return compiled.compile_fields(self.model, before, time.perf_counter() - started)

    def generate(self, prompts: torch.Tensor, new_tokens: int) -> GenerationTiming:
        return time_generation(self.model, prompts, new_tokens, **self.options)

    def weight_bytes(self) -> int:
        return weight_bytes(self.model)

    def decode_bytes_per_step(self, batch_size: int, context_tokens: float) -> dict[str, float]:
        return bytes_per_decode_step(self.model, batch_size, context_tokens)

    def lm_eval_model(self, tokenizer: Any, batch_size: int) -> Any:
        """lm-eval's own Hugging Face wrapper around the converted model in memory."""
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=self.model, tokenizer=tokenizer, batch_size=batch_size)
