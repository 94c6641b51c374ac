"""The base of torch's precisions (applied to the loaded ``nn.Module``), and the helpers that swap its layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from evalbench.errors import PrecisionError
from evalbench.precision.base import Precision


@dataclass
class TorchPrecision(Precision):
    """A precision torch applies to the model it loaded (``backend=torch``)."""

    backend: ClassVar[str] = "torch"
    load_dtype: ClassVar[torch.dtype] = torch.float32  # torch loads the checkpoint at this dtype, then applies

    def apply(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place and return it."""
        raise NotImplementedError

    def implementation(self) -> str:
        return f"torch {torch.__version__} aten linear"


class QuantizedLinear(nn.Module):
    """Base of layers whose matmul is a low-precision kernel: it flattens, adds the bias, reshapes."""

    compute_dtype = torch.bfloat16

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(self.compute_dtype))

    def matmul(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat @ W.T`` for ``flat`` of shape [tokens, in_features] in ``compute_dtype``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.matmul(x.reshape(-1, self.in_features).to(self.compute_dtype))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def linear_layers(model: nn.Module, skip_modules: list[str]) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` with its qualified name, but those with a name part in ``skip_modules``."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not set(name.split(".")) & set(skip_modules)
    ]


def replace_linears(model: nn.Module, skip_modules: list[str], convert: Callable[[str, nn.Linear], nn.Module]) -> int:
    """Replace every ``nn.Linear`` whose qualified name has no part in ``skip_modules``.

    ``convert`` receives the layer's qualified name and the layer and returns its
    replacement. Returns how many layers were replaced; raises when none were.
    """
    targets = linear_layers(model, skip_modules)
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, convert(name, module))
    if not targets:
        raise PrecisionError(f"no nn.Linear layer to convert (skip_modules={skip_modules})")
    return len(targets)
