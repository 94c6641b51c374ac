"""INT8 dynamic (W8A8): int8 weights per channel, activations quantized on the fly per token."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evalbench.errors import PrecisionError
from evalbench.precision.base import Precision, replace_linears


class Int8DynamicLinear(nn.Module):
    """A linear layer run by FBGEMM's int8 GEMM (``quantized::linear_dynamic``) with per-token scales.

    ``linear_dynamic`` picks one activation scale for the whole input tensor. Each
    token (row) is first divided by its own absolute maximum, so that one scale is
    exactly a per-token scale, and the output row is multiplied back: a linear map
    commutes with a per-row factor. Weights are symmetric int8 per output channel.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.packed_nbytes = weight.numel() + scales.numel() * 4  # int8 values + fp32 scales
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        token_scale = flat.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        out = torch.ops.quantized.linear_dynamic(flat / token_scale, self.packed, False) * token_scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


@dataclass
class Int8Dynamic(Precision):
    """W8A8: int8 per-channel weights, int8 per-token activations, int32 accumulation, fp32 elsewhere."""

    name: str = "int8_dynamic"
    scheme: str = "int8_dynamic_per_token_activation_per_channel_weight"

    def check_supported(self) -> None:
        if "fbgemm" not in torch.backends.quantized.supported_engines:
            raise PrecisionError(
                "int8_dynamic needs FBGEMM (x86-64 with AVX2); this build of torch offers quantized engines "
                f"{torch.backends.quantized.supported_engines}"
            )

    def apply(self, model: nn.Module) -> nn.Module:
        model.to(torch.float32)
        replace_linears(model, self.skip_modules, lambda _, layer: Int8DynamicLinear(layer))
        return model

    def implementation(self) -> str:
        return f"torch {torch.__version__} quantized::linear_dynamic ({torch.backends.quantized.engine})"
