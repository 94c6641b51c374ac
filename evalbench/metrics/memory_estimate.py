"""Memory a configuration needs, estimated before anything loads, against what the machine has.

The estimate is what a run holds at its peak: the FP32 model every backend starts from (torch
converts it in memory; llama.cpp and ONNX Runtime write their files from it), the copies made
on the way (pruning rewrites every weight; a precision below 32 bits first casts the model to
its 16-bit compute type), the weights at the precision, the KV cache of the timed generation
and the logits of one scoring window: the backend's own, in its dtype, plus the scratch of the one
chunk of positions scoring turns into log-probabilities at a time (:mod:`evalbench.metrics.chunked`).
A configuration whose estimate exceeds the available memory fails with one line, instead of
being killed by the kernel's out-of-memory killer half-way through.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from evalbench.errors import EvalbenchError
from evalbench.metrics.bandwidth import kv_values_per_token
from evalbench.metrics.chunked import scratch_bytes

GIB = 2**30
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of a configuration's estimated peak memory, in bytes."""

    fp32_model: int
    copies: int
    weights: int
    kv_cache: int
    logits: int

    @property
    def total(self) -> int:
        return sum(self.parts().values())

    def parts(self) -> dict[str, int]:
        return {
            "FP32 model": self.fp32_model,
            "copies": self.copies,
            "weights": self.weights,
            "KV cache": self.kv_cache,
            "logits": self.logits,
        }

    def describe(self) -> str:
        return ", ".join(f"{name} {value / GIB:.2f}" for name, value in self.parts().items())


def count_parameters(location: str, trust_remote_code: bool = False) -> tuple[int, object]:
    """The model's parameter count and text config, from its config alone (built on the meta device)."""
    config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in model.parameters()), config.get_text_config()


def estimate(
    parameters: int,
    text_config: object,
    weight_bits: int,
    batch_size: int,
    sequence_tokens: int,
    window: int,
    pruned: bool = False,
    logits_bytes: int = 4,
) -> MemoryEstimate:
    """The estimate for ``parameters`` at ``weight_bits``, ``batch_size`` sequences of ``sequence_tokens`` each.

    ``logits_bytes``: bytes per value of a window's logits as the backend holds them
    (:meth:`~evalbench.backends.base.BackendConfig.logits_bytes`).
    """
    kv_per_token = kv_values_per_token(text_config) * 4  # float32, the widest cache
    return MemoryEstimate(
        fp32_model=4 * parameters,
        copies=(4 * parameters if pruned else 0) + (2 * parameters if weight_bits < 32 else 0),
        weights=parameters * weight_bits // 8,
        kv_cache=batch_size * sequence_tokens * kv_per_token,
        logits=window_logits_bytes(window, text_config.vocab_size, logits_bytes),
    )


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


def check_fits(needed: MemoryEstimate, available: int) -> None:
    """Raise one line naming both numbers when the estimate exceeds ``available``."""
    if needed.total > available:
        raise EvalbenchError(
            f"this configuration needs an estimated {needed.total / GIB:.2f} GiB ({needed.describe()} GiB) but "
            f"{available / GIB:.2f} GiB is available; valid: fewer weight bits, a smaller batch_size or "
            "speed.prompt_tokens, a machine with more memory, or memory_check=false to try anyway"
        )
