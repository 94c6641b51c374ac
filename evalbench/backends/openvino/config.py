"""Settings of the OpenVINO backend (``backend=openvino``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evalbench.backends.base import BackendConfig
from evalbench.errors import EvalbenchError
from evalbench.metrics.memory_estimate import MemoryEstimate, ModelShape, Workload
from evalbench.pruning.base import Pruning

# The CPU plugin's KV cache precisions (KV_CACHE_PRECISION) -> bytes per value (u8 and u4 with their group scales).
KV_CACHE_PRECISIONS = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "u8": 1.0, "u4": 0.5}
DEFAULT_KV_BYTES = 2.0  # the plugin's own choice: f16 for a float IR, u8 for a compressed one


@dataclass
class OpenVinoConfig(BackendConfig):
    """How OpenVINO's CPU plugin compiles the model's IR, and which Python exports the IR.

    ``kv_cache_precision`` and ``dynamic_quantization_group_size`` are the plugin's
    ``KV_CACHE_PRECISION`` and ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` (null: OpenVINO's own choice;
    each run records the value the compiled model reports). ``exporter_python`` is a Python with
    optimum-intel that exports the checkpoint (null: evalbench's exporter environment, made once
    in the cache; ``python -m evalbench.backends.openvino.exporter`` makes it ahead of time).
    """

    backend_class: ClassVar[str] = "evalbench.backends.openvino.backend.OpenVinoBackend"
    name: ClassVar[str] = "openvino"
    runtime_name: ClassVar[str] = "OpenVINO"
    calibration_methods: ClassVar[tuple[str, ...]] = ("awq", "gptq")

    kv_cache_precision: str | None = None
    dynamic_quantization_group_size: int | None = None  # 0: activations never quantized
    exporter_python: str | None = None

    def __post_init__(self) -> None:
        if self.kv_cache_precision is not None and self.kv_cache_precision not in KV_CACHE_PRECISIONS:
            raise EvalbenchError(
                f"backend.kv_cache_precision={self.kv_cache_precision!r} is invalid; valid: null (OpenVINO's "
                f"choice) or one of {list(KV_CACHE_PRECISIONS)}"
            )
        group = self.dynamic_quantization_group_size
        if group is not None and (not isinstance(group, int) or group < 0):
            raise EvalbenchError(
                f"backend.dynamic_quantization_group_size={group!r} is invalid; valid: null (OpenVINO's choice), "
                "0 (off) or a group size such as 32"
            )
        if self.exporter_python is not None and not Path(self.exporter_python).expanduser().is_file():
            raise EvalbenchError(
                f"backend.exporter_python={self.exporter_python!r} is not a file; valid: null (evalbench's exporter "
                "environment) or the path of a Python with optimum-intel installed"
            )

    def check_calibration(self, precision: Any, calibration: Any) -> None:
        """AWQ and GPTQ choose int4 weights: refused for the other precisions."""
        if calibration.enabled and precision.weight_bits != 4:
            raise EvalbenchError(
                f"calibration={calibration.method} chooses NNCF's int4 weights, not precision={precision.name}'s; "
                "valid: precision=ov_int4, or calibration=none"
            )

    def logits_bytes(self, precision: Any) -> int:
        """The plugin's float32 ``logits`` output, and the copy scoring keeps of it."""
        return 8

    def memory_needed(self, precision: Any, shape: ModelShape, workload: Workload, pruning: Pruning) -> MemoryEstimate:
        """The IR's weights (mapped) and the plugin's compiled copy of them, the KV cache, one layer's activations
        and one window's logits. Exporting holds the checkpoint, the float32 model optimum-intel traces and the
        IR it converts; compressing, the float32 IR and its compressed copy."""
        embedding_bytes = 1 if precision.weight_bits < 16 else precision.weight_bits / 8
        weights = shape.weight_bytes(precision.weight_bits, embedding_bytes)
        kv_bytes = KV_CACHE_PRECISIONS.get(self.kv_cache_precision or "", DEFAULT_KV_BYTES)
        parts = {
            "IR weights (mapped)": weights,
            "compiled weights": weights,
            "KV cache": shape.kv_bytes(max(workload.generation_tokens, workload.window), kv_bytes),
            "activations": shape.activation_bytes(workload, 4),
            "logits": self.logits_memory(precision, shape, workload),
        }
        conversion = {
            **shape.dequantized_copy_bytes(),
            "exporter's checkpoint": shape.parameters * shape.checkpoint_bytes,
            "exporter's float32 model": shape.parameters * 4,
            "float32 IR": shape.parameters * 4,
        }
        return MemoryEstimate("openvino", parts, conversion)
