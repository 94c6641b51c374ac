"""ONNX Runtime GenAI's weight formats, written by its model builder for ``backend=ort_genai``.

``ort_fp32`` keeps every weight in float32; ``ort_int8`` and ``ort_int4`` quantize the
``MatMul`` weights block-wise to ``MatMulNBits`` (run by ONNX Runtime's MLAS kernels on the
CPU). The output head (with a tied model, the embedding it shares) stays float32 unless
``quantize_lm_head``, as the torch precisions skip ``lm_head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from evalbench.errors import PrecisionError
from evalbench.precision.base import Precision

# name -> (the builder's --precision, weight bits)
ONNX_TYPES = {"ort_fp32": ("fp32", 32), "ort_int8": ("int8", 8), "ort_int4": ("int4", 4)}
BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS = {1: "fp32", 2: "fp16", 3: "bf16", 4: "int8"}  # MatMulNBits compute type of the activations
INT8_ACTIVATIONS = 4
# Builder nodes that read the output head and the embedding; excluded from quantization unless quantize_lm_head.
HEAD_NODES = ("/lm_head/MatMul", "/model/embed_tokens/Gather")


def _ort_version() -> str:
    try:
        return version("onnxruntime")
    except PackageNotFoundError:
        return "(not installed)"


@dataclass
class OnnxPrecision(Precision):
    """A model-builder precision: float32, or block-wise int8/int4 weights (``MatMulNBits``)."""

    backend = "ort_genai"
    name: str = "ort_fp32"
    scheme: str = "none"
    block_size: int = 32  # weights sharing one scale (int8/int4)
    accuracy_level: int = 4  # activations of the quantized matmuls: 1 fp32, 2 fp16, 3 bf16, 4 int8
    is_symmetric: bool = True  # signed weights without zero points; false: unsigned with zero points
    quantize_lm_head: bool = False  # quantize the output head too (and, tied, the embedding it shares)

    def __post_init__(self) -> None:
        if self.name not in ONNX_TYPES:
            raise PrecisionError(f"precision.name={self.name!r} is not an ONNX type; valid: {list(ONNX_TYPES)}")
        if self.block_size not in BLOCK_SIZES:
            raise PrecisionError(f"precision.block_size={self.block_size} is invalid; valid: {list(BLOCK_SIZES)}")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise PrecisionError(
                f"precision.accuracy_level={self.accuracy_level} is invalid; valid: "
                + ", ".join(f"{level} ({kind})" for level, kind in ACCURACY_LEVELS.items())
            )
        for key in ("is_symmetric", "quantize_lm_head"):
            if not isinstance(getattr(self, key), bool):
                raise PrecisionError(f"precision.{key}={getattr(self, key)!r} is invalid; valid: true or false")
        self.scheme = self._scheme()
        self.skip_modules = [] if self.quantized and self.quantize_lm_head else ["lm_head"]

    @property
    def quantized(self) -> bool:
        return self.name != "ort_fp32"

    @property
    def weight_bits(self) -> int:
        return ONNX_TYPES[self.name][1]

    @property
    def activations_quantized(self) -> bool:
        return self.quantized and self.accuracy_level == INT8_ACTIVATIONS

    @property
    def builder_precision(self) -> str:
        """The model builder's ``--precision``."""
        return ONNX_TYPES[self.name][0]

    def _scheme(self) -> str:
        if not self.quantized:
            return "none"
        kind = "int" if self.is_symmetric else "uint"
        return f"matmulnbits_{kind}{self.weight_bits}_block{self.block_size}"

    def builder_options(self) -> dict[str, str]:
        """The model builder's ``--extra_options`` for this precision (none for float32)."""
        if not self.quantized:
            return {}
        options = {
            "block_size": str(self.block_size),
            "accuracy_level": str(self.accuracy_level),
            "is_symmetric": str(self.is_symmetric).lower(),
        }
        if not self.quantize_lm_head:
            options["nodes_to_exclude"] = ",".join(HEAD_NODES)
        return options

    def check_supported(self) -> None:
        try:
            import onnxruntime_genai  # noqa: F401
        except ImportError as exc:
            raise PrecisionError(
                f"precision={self.name} needs onnxruntime-genai: pip install onnxruntime-genai==0.18.0 "
                "onnxruntime==1.32.0 onnx onnx-ir"
            ) from exc

    def implementation(self) -> str:
        if not self.quantized:
            return f"onnxruntime {_ort_version()} CPU MLAS sgemm (MatMul)"
        activations = ACCURACY_LEVELS[self.accuracy_level]
        return (
            f"onnxruntime {_ort_version()} CPU MLAS MatMulNBits ({self.weight_bits}-bit weights, {activations} compute)"
        )

    def describe(self) -> dict[str, object]:
        fields = {key: getattr(self, key) for key in ("block_size", "accuracy_level", "is_symmetric")}
        if not self.quantized:
            fields = dict.fromkeys(fields)  # float32: no quantization settings apply
        return {**super().describe(), **fields, "quantize_lm_head": self.quantized and self.quantize_lm_head}
