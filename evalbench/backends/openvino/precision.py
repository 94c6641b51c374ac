"""OpenVINO's precisions for ``backend=openvino``: how the CPU plugin computes, and how NNCF compresses the weights.

``ov_fp32`` and ``ov_bf16`` run the float32 IR with the plugin's inference precision set to f32 or
bf16 (recorded as the compiled model reports it; bf16 needs a CPU with BF16 support).
``ov_int8`` and ``ov_int4`` compress the IR's weights with ``nncf.compress_weights``: int8 per
output channel (asymmetric), int4 in groups (symmetric or not) with a ``ratio`` of the linear
layers at 4 bits and the rest, the embedding and the output head at ``backup`` precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from evalbench.errors import PrecisionError
from evalbench.precision.base import Precision

# name -> (the plugin's INFERENCE_PRECISION_HINT, weight bits)
OV_TYPES = {"ov_fp32": ("f32", 32), "ov_bf16": ("bf16", 16), "ov_int8": ("f32", 8), "ov_int4": ("f32", 4)}
BACKUPS = ("int8_asym", "int8_sym", "none")  # nncf.BackupMode: the layers ratio leaves out of int4
INSTALL = "pip install openvino==2026.4.1 openvino-genai==2026.4.1.0 openvino-tokenizers==2026.4.1.0 nncf==3.4.0"


def openvino_version() -> str:
    try:
        return version("openvino")
    except PackageNotFoundError:
        return "(not installed)"


@dataclass
class OpenVinoPrecision(Precision):
    """An OpenVINO precision: the float32 IR at an inference precision, or its weights compressed by NNCF."""

    backend = "openvino"
    name: str = "ov_fp32"
    scheme: str = "none"
    group_size: int = 64  # int4: weights sharing one scale (a divisor of every layer's input size); -1 per channel
    symmetric: bool = True  # int4: signed weights without zero points; false: unsigned with zero points
    ratio: float = 1.0  # int4: the share of the linear layers' weights at 4 bits, the most sensitive at backup
    backup: str = "int8_asym"  # int4: the precision of the embedding, the output head and the layers ratio leaves

    def __post_init__(self) -> None:
        if self.name not in OV_TYPES:
            raise PrecisionError(f"precision.name={self.name!r} is not an OpenVINO type; valid: {list(OV_TYPES)}")
        if not isinstance(self.group_size, int) or (self.group_size < 1 and self.group_size != -1):
            raise PrecisionError(
                f"precision.group_size={self.group_size!r} is invalid; valid: a positive divisor of the layers' "
                "input size (32, 64, 128), or -1 (one scale per output channel)"
            )
        if not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1:
            raise PrecisionError(f"precision.ratio={self.ratio!r} is invalid; valid: a number in (0, 1]")
        if self.backup not in BACKUPS:
            raise PrecisionError(f"precision.backup={self.backup!r} is invalid; valid: {list(BACKUPS)}")
        if not isinstance(self.symmetric, bool):
            raise PrecisionError(f"precision.symmetric={self.symmetric!r} is invalid; valid: true or false")
        self.scheme = self._scheme()
        self.skip_modules = [] if self.name == "ov_int8" or (self.compressed and self.backup != "none") else ["lm_head"]

    @property
    def compressed(self) -> bool:
        """Whether NNCF compresses the weights (int8, int4)."""
        return self.weight_bits < 16

    @property
    def activations_quantized(self) -> bool:
        """The CPU plugin quantizes the activations of compressed weights' matmuls to int8 by default (in groups of
        DYNAMIC_QUANTIZATION_GROUP_SIZE; 0 turns it off, recorded as ov_dynamic_quantization_group_size)."""
        return self.compressed

    @property
    def weight_bits(self) -> int:
        return OV_TYPES[self.name][1]

    @property
    def inference_precision(self) -> str:
        """The CPU plugin's ``INFERENCE_PRECISION_HINT``."""
        return OV_TYPES[self.name][0]

    @property
    def nncf_mode(self) -> str | None:
        """The ``nncf.CompressWeightsMode`` member, or None for an uncompressed precision."""
        if not self.compressed:
            return None
        return "INT8_ASYM" if self.weight_bits == 8 else ("INT4_SYM" if self.symmetric else "INT4_ASYM")

    def compression(self) -> dict[str, object]:
        """``nncf.compress_weights``' arguments (names as given, modes by name); empty for float precisions."""
        if self.weight_bits == 8:
            return {"mode": self.nncf_mode}
        if self.weight_bits == 4:
            int4 = {"group_size": self.group_size, "ratio": self.ratio, "backup_mode": self.backup}
            return {"mode": self.nncf_mode, **int4}
        return {}

    def _scheme(self) -> str:
        if self.weight_bits == 8:
            return "nncf_int8_asym_per_channel"
        if self.weight_bits == 4:
            kind = "sym" if self.symmetric else "asym"
            group = "per_channel" if self.group_size == -1 else f"group{self.group_size}"
            return f"nncf_int4_{kind}_{group}_ratio{self.ratio:g}_backup_{self.backup}"
        return "none" if self.name == "ov_fp32" else "bf16 inference"

    def check_supported(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise PrecisionError(f"precision={self.name} needs OpenVINO: {INSTALL} (the openvino extra)") from exc
        if self.inference_precision == "bf16":
            capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in capabilities:
                raise PrecisionError(
                    f"precision=ov_bf16 needs a CPU OpenVINO computes bf16 on (AVX512_BF16 or AMX); this one offers "
                    f"{', '.join(capabilities)}; valid here: ov_fp32, ov_int8, ov_int4"
                )
        if self.compressed:
            try:
                import nncf  # noqa: F401
            except ImportError as exc:
                raise PrecisionError(f"precision={self.name} needs NNCF to compress the weights: {INSTALL}") from exc

    def implementation(self) -> str:
        cpu = f"openvino {openvino_version()} CPU plugin"
        if not self.compressed:
            return f"{cpu} ({self.inference_precision} matmuls)"
        return f"{cpu} ({self.weight_bits}-bit weights, int8 dynamically quantized activations by default)"

    def describe(self) -> dict[str, object]:
        int4 = self.weight_bits == 4
        fields = {key: getattr(self, key) if int4 else None for key in ("group_size", "symmetric", "ratio", "backup")}
        return {**super().describe(), **fields, "inference_precision_hint": self.inference_precision}
