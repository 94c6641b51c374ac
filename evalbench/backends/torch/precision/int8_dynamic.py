"""INT8 dynamic (W8A8): int8 weights per channel, activations quantized on the fly per token."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from evalbench.backends.torch.precision.base import QuantizedLinear, TorchPrecision, replace_linears
from evalbench.errors import PrecisionError

REDUCE_RANGE_CHOICES = ("weights", "activations", "none")


class Int8DynamicLinear(QuantizedLinear):
    """A linear layer run by FBGEMM's int8 GEMM (``quantized::linear_dynamic``) with per-token scales.

    ``linear_dynamic`` picks one activation scale for the whole input tensor. Each
    token (row) is first divided by its own absolute maximum, so that one scale is
    exactly a per-token scale, and the output row is multiplied back: a linear map
    commutes with a per-row factor. Weights are symmetric int8 per output channel.

    Without VNNI, FBGEMM sums pairs of u8*s8 products in int16, which saturates when
    both operands use 8 bits. ``reduce_range`` names the operand that gives up a bit:
    "weights" (int7 weights, 8-bit activations; the default, half the error of the other
    choice on the sample model), "activations" (PyTorch's ``reduce_range``) or "none"
    (only for CPUs with VNNI).
    """

    compute_dtype = torch.float32

    def __init__(self, linear: nn.Linear, reduce_range: str = "weights") -> None:
        super().__init__(linear)
        weight = linear.weight.detach().float()
        qmax = 63.5 if reduce_range == "weights" else 127.0
        scales = (weight.abs().amax(dim=1).clamp(min=1e-12) / qmax).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated upstream; torch is pinned
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        self.reduce_activation_range = reduce_range == "activations"
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.packed_nbytes = weight.numel() + scales.numel() * 4  # int8 values + fp32 scales

    def matmul(self, flat: torch.Tensor) -> torch.Tensor:
        token_scale = flat.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        return (
            torch.ops.quantized.linear_dynamic(flat / token_scale, self.packed, self.reduce_activation_range)
            * token_scale
        )


@dataclass
class Int8Dynamic(TorchPrecision):
    """W8A8: int8 per-channel weights, int8 per-token activations, int32 accumulation, fp32 elsewhere."""

    weight_bits: ClassVar[int] = 8
    activations_quantized: ClassVar[bool] = True
    name: str = "int8_dynamic"
    scheme: str = "int8_dynamic_per_token_activation_per_channel_weight"
    reduce_range: str = "weights"  # which operand is 7-bit: weights | activations | none (VNNI only)

    def __post_init__(self) -> None:
        if self.reduce_range not in REDUCE_RANGE_CHOICES:
            raise PrecisionError(
                f"precision.reduce_range={self.reduce_range!r} is invalid; valid: {list(REDUCE_RANGE_CHOICES)}"
            )

    def check_supported(self) -> None:
        if "fbgemm" not in torch.backends.quantized.supported_engines:
            raise PrecisionError(
                "int8_dynamic needs FBGEMM (x86-64 with AVX2); this build of torch offers quantized engines "
                f"{torch.backends.quantized.supported_engines}"
            )

    def apply(self, model: nn.Module) -> nn.Module:
        model.to(torch.float32)
        replace_linears(model, self.skip_modules, lambda _, layer: Int8DynamicLinear(layer, self.reduce_range))
        return model

    def implementation(self) -> str:
        return f"torch {torch.__version__} quantized::linear_dynamic ({torch.backends.quantized.engine})"

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "reduce_range": self.reduce_range}
