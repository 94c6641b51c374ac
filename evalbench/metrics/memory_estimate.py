"""Memory a configuration needs, estimated before anything loads, against what the machine has.

Each backend estimates what its runtime holds at its peak (:meth:`~evalbench.backends.base.BackendConfig.
memory_needed`: torch its weights at the load dtype and the copies its conversion makes; llama.cpp the
mapped GGUF; ONNX Runtime its session) plus the KV cache of the timed generation and the logits of one
scoring window, and, separately, what writing its files needs when they are not cached (the GGUF
converter, the ONNX model builder). Before either, the measuring process already holds its
libraries: counted as measured. The peak is the larger of the two phases; a configuration whose
estimate exceeds the available memory fails with one line naming the runtime's figure, instead
of being killed by the kernel's out-of-memory killer half-way through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from evalbench.errors import EvalbenchError
from evalbench.metrics.bandwidth import kv_values_per_token
from evalbench.metrics.chunked import scratch_bytes
from evalbench.metrics.memory import current_rss_bytes

GIB = 2**30
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know of the model, read from its config alone (built on the meta device)."""

    parameters: int
    text_config: object
    checkpoint_bytes: int  # bytes per parameter as stored: 2 for bf16, 4 for fp32 (and a de-quantized GGUF)
    largest_tensor: int  # values in the largest weight (the embedding, mostly): converters hold one at a time
    embedding_parameters: int  # the input embedding's, and the output head's when not tied: kept unquantized
    largest_linear: int  # values in the largest linear layer's weight but the output head's (quantized one at a time)
    gguf_source: bool = False  # the model is a GGUF file: torch and the ONNX builder read its FP32 de-quantized copy

    @classmethod
    def of(
        cls, config: PretrainedConfig, checkpoint_dtype: torch.dtype, gguf_source: bool, trust_remote_code: bool = False
    ) -> ModelShape:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        sizes = [p.numel() for p in model.parameters()]
        heads = (model.get_input_embeddings(), model.get_output_embeddings())
        embeddings = {id(m.weight): m.weight.numel() for m in heads if m is not None}  # tied: counted once
        linears = [m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not heads[1]]
        itemsize = 4 if gguf_source else torch.empty((), dtype=checkpoint_dtype).element_size()
        return cls(
            sum(sizes), config.get_text_config(), itemsize, max(sizes), sum(embeddings.values()),
            max(linears, default=0), gguf_source,
        )  # fmt: skip

    def weight_bytes(self, bits: float, embedding_bytes: float) -> int:
        """The weights with the linear layers at ``bits`` per value and the embeddings at ``embedding_bytes``."""
        linear = self.parameters - self.embedding_parameters
        return int(linear * bits / 8 + self.embedding_parameters * embedding_bytes)

    def dequantized_copy_bytes(self) -> dict[str, int]:
        """What de-quantizing a GGUF source to the FP32 checkpoint torch and the ONNX builder read needs (once)."""
        return {"GGUF de-quantized to FP32": 4 * self.parameters} if self.gguf_source else {}

    def kv_bytes(self, tokens: int, bytes_per_value: float) -> int:
        """The KV cache of ``tokens`` positions (all sequences together) at ``bytes_per_value``."""
        return int(tokens * kv_values_per_token(self.text_config) * bytes_per_value)

    def activation_bytes(self, workload: Workload, bytes_per_value: int) -> int:
        """One layer's intermediates in the larger forward pass (a scoring window, or the batch's prefill): the
        hidden states and norms, the MLP's gate, up and product, and the attention scores of every head."""
        config = self.text_config
        prefill = (workload.generation_tokens, workload.sequence_tokens)
        tokens, sequence = max((workload.window, workload.window), prefill)
        intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
        per_token = 4 * config.hidden_size + 3 * intermediate + config.num_attention_heads * sequence
        return tokens * per_token * bytes_per_value

    def window_logits_bytes(self, window: int, logits_bytes: int) -> int:
        return window_logits_bytes(window, self.text_config.vocab_size, logits_bytes)


@dataclass(frozen=True)
class Workload:
    """How much a run asks of the model at once."""

    batch_size: int
    sequence_tokens: int  # prompt + new tokens of the timed generation (0: not timed)
    window: int  # tokens of a scoring window (0: not scored)

    @property
    def generation_tokens(self) -> int:
        return self.batch_size * self.sequence_tokens


@dataclass(frozen=True)
class MemoryEstimate:
    """One runtime's estimated peak: what it holds while measuring, what writing its files needs, in bytes."""

    runtime: str
    parts: dict[str, int]
    conversion: dict[str, int] = field(default_factory=dict)
    process: int = 0  # what the measuring process holds before loading (its libraries)

    @property
    def total(self) -> int:
        return self.process + max(sum(self.parts.values()), sum(self.conversion.values()))

    def describe(self) -> str:
        def gib(parts: dict[str, int]) -> str:
            return ", ".join(f"{name} {value / GIB:.2f}" for name, value in parts.items())

        converting = f"; converting: {gib(self.conversion)}" if self.conversion else ""
        return f"{self.runtime}: this process {self.process / GIB:.2f}, {gib(self.parts)}{converting} GiB"

    def to_record(self, prefix: str = "memory_estimate") -> dict[str, object]:
        return {
            f"{prefix}_bytes": self.total,
            f"{prefix}_parts": {**self.parts, "process": self.process},
            f"{prefix}_conversion_bytes": sum(self.conversion.values()),
        }


def window_logits_bytes(window: int, vocab: int, logits_bytes: int = 4, budget: int | None = None) -> int:
    """A scoring window's logits as the backend holds them, and the scratch of one chunk of them."""
    return window * vocab * logits_bytes + scratch_bytes(window, vocab, budget)


def _cgroup_free() -> int | None:
    """Bytes the cgroup (v2) may still use, when it has a limit."""
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        used = int((_CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def available_bytes() -> int:
    """Memory this process can still take: the kernel's MemAvailable, or less under a cgroup limit."""
    fields = dict(line.split(":", 1) for line in _MEMINFO.read_text().splitlines() if ":" in line)
    available = int(fields["MemAvailable"].split()[0]) * 1024
    cgroup = _cgroup_free()
    return min(available, cgroup) if cgroup is not None else available


def with_process(needed: MemoryEstimate) -> MemoryEstimate:
    """``needed`` with what this process holds now (its libraries, before any model loads)."""
    return MemoryEstimate(needed.runtime, needed.parts, needed.conversion, current_rss_bytes())


FEWER_BYTES = "fewer weight bits, a smaller batch_size or speed.prompt_tokens"


def check_fits(
    needed: MemoryEstimate, available: int, what: str = "this configuration", remedy: str = FEWER_BYTES
) -> None:
    """Raise one line naming the runtime's figure and the available memory when the estimate exceeds it."""
    if needed.total > available:
        raise EvalbenchError(
            f"{what} needs an estimated {needed.total / GIB:.2f} GiB ({needed.describe()}) but "
            f"{available / GIB:.2f} GiB is available; valid: {remedy}, a machine with more memory, or "
            "memory_check=false to try anyway"
        )
