"""Settings of the ONNX Runtime GenAI backend (``backend=ort_genai``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evalbench.backends.base import BackendConfig
from evalbench.errors import EvalbenchError
from evalbench.metrics.memory_estimate import MemoryEstimate, ModelShape, Workload
from evalbench.pruning.base import Pruning

# Builder options the backend or the precision sets: scoring needs the logits of every position.
RESERVED_OPTIONS = (
    "block_size",
    "accuracy_level",
    "is_symmetric",
    "nodes_to_exclude",
    "int4_block_size",
    "int4_accuracy_level",
    "int4_is_symmetric",
    "int4_nodes_to_exclude",
    "prune_lm_head",
    "exclude_lm_head",
    "exclude_embeds",
    "include_hidden_states",
    "use_paged_attention",
    "filename",
    "config_only",
)


@dataclass
class OrtGenaiConfig(BackendConfig):
    """How the model builder exports the model and ONNX Runtime GenAI runs it on the CPU.

    ``builder_options`` are further ``--extra_options`` of the model builder (``KEY: VALUE``,
    e.g. ``{fuse_qkv: "false"}``); those the precision or the backend set are refused.
    """

    backend_class: ClassVar[str] = "evalbench.backends.ort_genai.backend.OrtGenaiBackend"
    name: ClassVar[str] = "ort_genai"
    runtime_name: ClassVar[str] = "ONNX Runtime GenAI"

    builder_options: dict[str, str] | None = field(default_factory=dict)  # null: none

    def logits_bytes(self, precision: Any) -> int:
        """The float32 copy of the ``logits`` output (ONNX Runtime's own is freed with the generator)."""
        return 4

    def memory_needed(self, precision: Any, shape: ModelShape, workload: Workload, pruning: Pruning) -> MemoryEstimate:
        """The session: its initializers (linear layers at the precision, the embeddings and head in float32) and
        the copies MLAS pre-packs them into, a float32 KV cache, one layer's
        activations, one window's logits. Exporting (the model builder,
        a process of its own) loads the checkpoint and holds the float32 graph it writes and quantizes."""
        weights = shape.weight_bytes(precision.weight_bits, 4)
        parts = {
            "session weights": weights,
            "pre-packed weights": weights,
            "KV cache": shape.kv_bytes(max(workload.generation_tokens, workload.window), 4),
            "activations": shape.activation_bytes(workload, 4),
            "logits": self.logits_memory(precision, shape, workload),
        }
        conversion = {
            **shape.dequantized_copy_bytes(),
            "builder's checkpoint": shape.parameters * shape.checkpoint_bytes,
            "builder's float32 graph": shape.parameters * 4,
        }
        return MemoryEstimate("ort_genai", parts, conversion)

    def __post_init__(self) -> None:
        self.builder_options = self.builder_options or {}
        if not isinstance(self.builder_options, Mapping):
            raise EvalbenchError(
                f"backend.builder_options={self.builder_options!r} is invalid; valid: a mapping of KEY: VALUE"
            )
        self.builder_options = {
            str(key): _option_value(key, value) for key, value in dict(self.builder_options).items()
        }
        reserved = sorted(set(self.builder_options) & set(RESERVED_OPTIONS))
        if reserved:
            raise EvalbenchError(
                f"backend.builder_options.{reserved[0]} is invalid: the precision or the backend sets it; "
                f"valid: any model builder option but {list(RESERVED_OPTIONS)}"
            )


def _option_value(key: object, value: object) -> str:
    """A builder option's value as the builder's command line takes it (booleans as true/false)."""
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, (str, int, float)) or not str(value) or any(c.isspace() for c in str(value)):
        raise EvalbenchError(
            f"backend.builder_options.{key}={value!r} is invalid; valid: a string, number or boolean without spaces"
        )
    return str(value)
