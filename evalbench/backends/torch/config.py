"""Settings of the PyTorch backend: eager or compiled, and how the checkpoint is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from evalbench.backends.base import BackendConfig
from evalbench.errors import EvalbenchError
from evalbench.metrics.memory_estimate import MemoryEstimate, ModelShape, Workload
from evalbench.pruning.base import Pruning

# Inductor modes that run on a CPU: "reduce-overhead" and "max-autotune" add CUDA graphs.
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
LOAD_MODES = ("mmap", "read")  # safetensors memory-mapped, or read whole into memory first


@dataclass
class TorchConfig(BackendConfig):
    """PyTorch through Transformers, precisions from ``conf/precision``.

    ``compile=true`` compiles the decode step with ``torch.compile`` (Inductor) over a static KV
    cache, as Transformers' ``generate`` does with ``cache_implementation="static"``; quality is
    scored by the same converted model in eager mode (the compiled graph runs the same operators).
    """

    backend_class: ClassVar[str] = "evalbench.backends.torch.backend.TorchBackend"
    name: ClassVar[str] = "torch"
    runtime_name: ClassVar[str] = "PyTorch"
    kv_cache_optional: ClassVar[bool] = True
    prunable: ClassVar[bool] = True

    compile: bool = False
    compile_mode: str = "default"
    freezing: bool = False  # Inductor folds the weights into the graph as constants (no on-disk graph cache then)
    load_mode: str = "mmap"

    def logits_bytes(self, precision: Any) -> int:
        """The model's logits, in its compute dtype: bfloat16 below 32-bit weights, but int8_dynamic's float32."""
        return 2 if precision.weight_bits < 32 and not precision.activations_quantized else 4

    def memory_needed(self, precision: Any, shape: ModelShape, workload: Workload, pruning: Pruning) -> MemoryEstimate:
        """The weights at the load dtype (the checkpoint's when pruning, which rewrites them: a second copy), the
        checkpoint's pages read while casting to another dtype, the 16-bit cast, the quantized layers beside it
        while they are made, the KV cache, one layer's activations, one window's logits."""
        load = shape.checkpoint_bytes if pruning.enabled else precision.load_dtype.itemsize
        compute = 4 if precision.load_dtype == torch.float32 else 2
        parts = {"weights as loaded": shape.parameters * load}
        if load != shape.checkpoint_bytes:  # the checkpoint's mapped pages, resident while they are cast
            parts["checkpoint read while casting"] = shape.parameters * shape.checkpoint_bytes
        if pruning.enabled:
            parts["pruned copy"] = shape.parameters * load
            if compute < load:
                parts["16-bit cast"] = shape.parameters * compute
        if precision.weight_bits < 16:
            parts["quantized weights"] = shape.weight_bytes(precision.weight_bits, 0)
            parts["quantizing one layer"] = 3 * 4 * shape.largest_linear  # its float32 weight, scaled and rounded
        parts["KV cache"] = shape.kv_bytes(workload.generation_tokens, compute)
        parts["activations"] = shape.activation_bytes(workload, compute)
        parts["logits"] = self.logits_memory(precision, shape, workload)
        return MemoryEstimate("torch", parts, shape.dequantized_copy_bytes())

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise EvalbenchError(f"backend.compile_mode={self.compile_mode} is invalid; valid: {list(COMPILE_MODES)}")
        if self.load_mode not in LOAD_MODES:
            raise EvalbenchError(f"backend.load_mode={self.load_mode} is invalid; valid: {list(LOAD_MODES)}")
