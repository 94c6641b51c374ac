"""INT8 weight-only: int8 weights per output channel, bf16 activations and compute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from evalbench.backends.torch.precision.base import QuantizedLinear, TorchPrecision, replace_linears


class Int8WeightOnlyLinear(QuantizedLinear):
    """A linear layer that stores int8 weights and calls ``aten._weight_int8pack_mm``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))

    def matmul(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)


@dataclass
class Int8WeightOnly(TorchPrecision):
    """Symmetric per-output-channel int8 weights; the rest of the model in bf16."""

    weight_bits: ClassVar[int] = 8
    load_dtype: ClassVar[torch.dtype] = torch.bfloat16  # apply() casts to it first: no float32 copy
    name: str = "int8"
    scheme: str = "int8_weight_only_per_channel"

    def apply(self, model: nn.Module) -> nn.Module:
        model.to(torch.bfloat16)
        replace_linears(model, self.skip_modules, lambda _, layer: Int8WeightOnlyLinear(layer))
        return model

    def implementation(self) -> str:
        return f"torch {torch.__version__} aten._weight_int8pack_mm"
