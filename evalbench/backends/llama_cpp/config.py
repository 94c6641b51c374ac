"""Settings of the llama.cpp backend (``backend=llama_cpp``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evalbench.backends.base import BackendConfig
from evalbench.errors import EvalbenchError
from evalbench.metrics.memory_estimate import MemoryEstimate, ModelShape, Workload
from evalbench.pruning.base import Pruning

# name -> (llama_cpp constant, bytes per element: q8_0 and q4_0 store 32 values in 34 and 18 bytes)
KV_CACHE_TYPES = {
    "f32": ("GGML_TYPE_F32", 4.0),
    "f16": ("GGML_TYPE_F16", 2.0),
    "q8_0": ("GGML_TYPE_Q8_0", 34 / 32),
    "q4_0": ("GGML_TYPE_Q4_0", 18 / 32),
}
FLASH_ATTN = ("auto", "on", "off")
EMBEDDING_BITS = 16  # the quantizer keeps the embedding and output head at q6_k, q8_0 or f16, whatever the type
LOAD_MODES = {"mmap": "LLAMA_LOAD_MODE_MMAP", "read": "LLAMA_LOAD_MODE_NONE", "mlock": "LLAMA_LOAD_MODE_MLOCK"}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise EvalbenchError(message)


@dataclass
class LlamaCppConfig(BackendConfig):
    """How llama.cpp loads and runs the GGUF file.

    ``gguf_file`` names an F32, F16 or BF16 GGUF of the model's weights, for a Hugging Face
    checkpoint that llama.cpp's ``convert_hf_to_gguf.py`` does not convert.
    """

    backend_class: ClassVar[str] = "evalbench.backends.llama_cpp.backend.LlamaCppBackend"
    name: ClassVar[str] = "llama_cpp"
    runtime_name: ClassVar[str] = "llama.cpp"
    calibration_methods: ClassVar[tuple[str, ...]] = ("imatrix",)

    n_ctx: int = 1024  # tokens of the scoring context; grown to fit a longer window
    n_batch: int = 512  # tokens per llama_decode call
    n_ubatch: int = 512  # tokens per compute step inside a call
    load_mode: str = "mmap"
    flash_attn: str = "auto"
    kv_cache_type: str = "f16"
    gguf_file: str | None = None

    def check_calibration(self, precision: Any, calibration: Any) -> None:
        """The importance matrix weighs the rounding of quantized types: refused for f32 and f16."""
        _check(
            not calibration.enabled or precision.weight_bits < 16,
            f"calibration={calibration.method} weighs the rounding of quantized GGUF types, and precision="
            f"{precision.name} rounds nothing; valid: a quantized type (q8_0, q6_k, q5_k_m, q4_k_m, q4_k_s, q4_0) "
            "or calibration=none",
        )

    def memory_needed(self, precision: Any, shape: ModelShape, workload: Workload, pruning: Pruning) -> MemoryEstimate:
        """The GGUF file, mapped (the embeddings at 16 bits at most), the KV cache of the larger of the scoring and
        generation contexts at ``kv_cache_type``, the compute buffer of one ``n_ubatch``, one window's logits
        (llama.cpp's float32 and evalbench's). Converting and quantizing hold a tensor or two at a time.

        4-bit weights llama.cpp re-lays out on load for its CPU kernels (``repacked_weight_bytes``) take the
        place of the mapped pages they were made from: the process's resident size counts both, but the kernel
        drops those clean file pages when memory is short, so they are not counted as needed.
        """
        bits = precision.bits_per_weight
        n_ctx = max(self.n_ctx, workload.window) if workload.window else 0
        kv_tokens = max(workload.generation_tokens, n_ctx)
        parts = {
            "mapped GGUF": shape.weight_bytes(bits, max(bits, EMBEDDING_BITS) / 8),
            "KV cache": shape.kv_bytes(kv_tokens, KV_CACHE_TYPES[self.kv_cache_type][1]),
            "compute buffer": self._compute_buffer(shape.text_config, max(n_ctx, workload.sequence_tokens)),
            "logits": self.logits_memory(precision, shape, workload),
        }
        return MemoryEstimate("llama_cpp", parts, {"converter's tensors": 2 * 4 * shape.largest_tensor})

    def _compute_buffer(self, text_config: Any, n_ctx: int) -> int:
        """float32 activations of one ``n_ubatch``: its logits, feed-forward and attention scores (no flash)."""
        hidden = text_config.hidden_size
        intermediate = getattr(text_config, "intermediate_size", None) or 4 * hidden
        heads = text_config.num_attention_heads
        return 4 * self.n_ubatch * (text_config.vocab_size + 3 * intermediate + n_ctx * heads)

    def __post_init__(self) -> None:
        for key in ("n_ctx", "n_batch", "n_ubatch"):
            value = getattr(self, key)
            _check(value >= 1, f"backend.{key}={value} is invalid; valid: an integer >= 1")
        _check(
            self.n_ubatch <= self.n_batch,
            f"backend.n_ubatch={self.n_ubatch} is invalid; valid: 1..backend.n_batch ({self.n_batch})",
        )
        _check(
            self.flash_attn in FLASH_ATTN, f"backend.flash_attn={self.flash_attn} is invalid; valid: {list(FLASH_ATTN)}"
        )
        _check(
            self.kv_cache_type in KV_CACHE_TYPES,
            f"backend.kv_cache_type={self.kv_cache_type} is invalid; valid: {list(KV_CACHE_TYPES)}",
        )
        _check(
            not (self.kv_cache_type.startswith("q") and self.flash_attn == "off"),
            f"backend.kv_cache_type={self.kv_cache_type} needs flash attention (llama.cpp quantizes the V cache only "
            "with it); valid: backend.flash_attn=auto or on, or kv_cache_type f16 or f32",
        )
        _check(
            self.load_mode in LOAD_MODES, f"backend.load_mode={self.load_mode} is invalid; valid: {list(LOAD_MODES)}"
        )
        _check(
            self.gguf_file is None or Path(self.gguf_file).expanduser().is_file(),
            f"backend.gguf_file={self.gguf_file!r} is not a file; valid: null or the path of an F32, F16 or BF16 GGUF",
        )
