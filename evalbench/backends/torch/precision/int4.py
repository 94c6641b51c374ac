"""INT4 weight-only: group-wise asymmetric int4 weights, bf16 activations and compute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from evalbench.backends.torch.precision.base import QuantizedLinear, TorchPrecision, replace_linears
from evalbench.errors import PrecisionError

SUPPORTED_GROUP_SIZES = (32, 64, 128, 256)


class Int4WeightOnlyLinear(QuantizedLinear):
    """A linear layer with packed int4 weights, run by ``aten._weight_int4pack_mm_for_cpu``.

    Each group of ``group_size`` input weights has its own scale and zero point
    (min/max quantization, as in gpt-fast): ``w = (q - 8) * scale + zero``.
    """

    def __init__(self, linear: nn.Linear, group_size: int) -> None:
        super().__init__(linear)
        out_features, in_features = linear.weight.shape
        weight = linear.weight.detach().float().reshape(out_features, in_features // group_size, group_size)
        low, high = weight.amin(dim=-1), weight.amax(dim=-1)
        scales = ((high - low) / 15.0).clamp(min=1e-6)
        zeros = low + scales * 8.0
        quantized = torch.round((weight - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
        self.group_size = group_size
        self.register_buffer(
            "weight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(quantized.reshape(out_features, -1), 1)
        )
        scales_and_zeros = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16))

    def matmul(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, self.group_size, self.scales_and_zeros)


@dataclass
class Int4WeightOnly(TorchPrecision):
    """Group-wise int4 weights (``group_size`` inputs share a scale and zero); the rest in bf16."""

    weight_bits: ClassVar[int] = 4
    load_dtype: ClassVar[torch.dtype] = torch.bfloat16  # apply() casts to it first: no float32 copy
    name: str = "int4"
    scheme: str = "int4_weight_only_groupwise"
    group_size: int = 32

    def __post_init__(self) -> None:
        if self.group_size not in SUPPORTED_GROUP_SIZES:
            raise PrecisionError(
                f"precision.group_size={self.group_size} is not supported; valid: {list(SUPPORTED_GROUP_SIZES)}"
            )

    def apply(self, model: nn.Module) -> nn.Module:
        def convert(name: str, layer: nn.Linear) -> nn.Module:
            if layer.in_features % self.group_size:
                raise PrecisionError(
                    f"int4 cannot apply to {name}: in_features={layer.in_features} is not divisible by "
                    f"precision.group_size={self.group_size}"
                )
            return Int4WeightOnlyLinear(layer, self.group_size)

        model.to(torch.bfloat16)
        replace_linears(model, self.skip_modules, convert)
        return model

    def implementation(self) -> str:
        return f"torch {torch.__version__} aten._weight_int4pack_mm_for_cpu"

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "group_size": self.group_size}
