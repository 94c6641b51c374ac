"""BF16: weights and compute in bfloat16."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from evalbench.backends.torch.precision.base import TorchPrecision


@dataclass
class BF16(TorchPrecision):
    """Every parameter cast to bfloat16; matmuls run in oneDNN's bf16 kernels."""

    weight_bits: ClassVar[int] = 16
    load_dtype: ClassVar[torch.dtype] = torch.bfloat16  # apply() casts to it first: no float32 copy
    name: str = "bf16"
    scheme: str = "bf16"

    def apply(self, model: nn.Module) -> nn.Module:
        return model.to(torch.bfloat16)
