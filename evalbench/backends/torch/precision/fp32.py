"""FP32: the model as loaded, the baseline every other precision is compared with."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evalbench.backends.torch.precision.base import TorchPrecision


@dataclass
class FP32(TorchPrecision):
    """Weights and compute in float32."""

    name: str = "fp32"
    scheme: str = "none"

    def apply(self, model: nn.Module) -> nn.Module:
        return model.to(torch.float32)
