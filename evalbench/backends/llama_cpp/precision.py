"""llama.cpp's own weight formats (GGUF tensor types), made by llama.cpp's quantizer for ``backend=llama_cpp``."""

from __future__ import annotations

from dataclasses import dataclass

from evalbench.errors import PrecisionError
from evalbench.precision.base import Precision

# Bits per weight as stored (scales included), from llama.cpp's own table of types (tools/quantize):
# the file's size is about parameters x this / 8.
BITS_PER_WEIGHT = {
    "f32": 32.0, "f16": 16.0, "q8_0": 8.5, "q6_k": 6.5625, "q5_k_m": 5.69,
    "q4_k_m": 4.89, "q4_k_s": 4.58, "q4_0": 4.5,
}  # fmt: skip
# name -> (llama_ftype constant in llama_cpp, nominal weight bits, scheme)
GGUF_TYPES = {
    "f32": ("LLAMA_FTYPE_ALL_F32", 32, "none"),
    "f16": ("LLAMA_FTYPE_MOSTLY_F16", 16, "f16"),
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 8, "q8_0: int8, one fp16 scale per block of 32"),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", 6, "q6_k: 6-bit k-quant, super-blocks of 256"),
    "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 5, "q5_k_m: 5-bit k-quant mix"),
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 4, "q4_k_m: 4-bit k-quant mix (some tensors q6_k)"),
    "q4_k_s": ("LLAMA_FTYPE_MOSTLY_Q4_K_S", 4, "q4_k_s: 4-bit k-quant"),
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 4, "q4_0: int4, one fp16 scale per block of 32"),
}


@dataclass
class GGUFType(Precision):
    """A GGUF weight type, written by ``llama_model_quantize`` from the model's base GGUF (bf16, f16 or f32)."""

    backend = "llama_cpp"
    name: str = "f32"
    scheme: str = "none"

    def __post_init__(self) -> None:
        if self.name not in GGUF_TYPES:
            raise PrecisionError(f"precision.name={self.name!r} is not a GGUF type; valid: {list(GGUF_TYPES)}")
        self.scheme = GGUF_TYPES[self.name][2]

    @property
    def ftype(self) -> str:
        """The ``llama_cpp`` constant naming this type."""
        return GGUF_TYPES[self.name][0]

    @property
    def weight_bits(self) -> int:
        return GGUF_TYPES[self.name][1]

    @property
    def bits_per_weight(self) -> float:
        return BITS_PER_WEIGHT[self.name]

    def implementation(self) -> str:
        return f"llama.cpp ggml CPU {self.name}"
