"""INT8 weight-only: int8 weights per output channel, bf16 activations and compute."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evalbench.precision.base import Precision, replace_linears


class Int8WeightOnlyLinear(nn.Module):
    """A linear layer that stores int8 weights and calls ``aten._weight_int8pack_mm``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


@dataclass
class Int8WeightOnly(Precision):
    """Symmetric per-output-channel int8 weights; the rest of the model in bf16."""

    name: str = "int8"
    scheme: str = "int8_weight_only_per_channel"

    def apply(self, model: nn.Module) -> nn.Module:
        model.to(torch.bfloat16)
        replace_linears(model, self.skip_modules, lambda _, layer: Int8WeightOnlyLinear(layer))
        return model

    def implementation(self) -> str:
        return f"torch {torch.__version__} aten._weight_int8pack_mm"
