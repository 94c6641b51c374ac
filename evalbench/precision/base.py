"""The interface every precision implements, and the helper that swaps ``nn.Linear`` layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from evalbench.errors import PrecisionError


@dataclass
class Precision:
    """A numeric format a model is converted to before it is measured.

    Subclasses set ``name``, ``scheme`` and ``weight_bits`` and implement :meth:`apply`; each
    one is also the typed Hydra config of its ``conf/precision/<name>.yaml`` file. ``backend``
    names the runtime whose precision it is (``evalbench/backends/<backend>``).
    """

    backend: ClassVar[str] = "torch"
    weight_bits: ClassVar[int] = 32
    load_dtype: ClassVar[torch.dtype] = torch.float32  # torch loads the checkpoint at this dtype, then applies
    activations_quantized: ClassVar[bool] = False
    name: str = "fp32"
    scheme: str = "none"
    skip_modules: list[str] = field(default_factory=lambda: ["lm_head"])

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight as stored, scales included (the memory estimate's figure)."""
        return float(self.weight_bits)

    def check_supported(self) -> None:
        """Raise :class:`PrecisionError` when this machine or torch build cannot run the precision."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place and return it."""
        raise NotImplementedError

    def implementation(self) -> str:
        """The kernel (and its library) that runs the model's matmuls."""
        return f"torch {torch.__version__} aten linear"

    def describe(self) -> dict[str, object]:
        """The fields recorded for this precision."""
        return {
            "precision": self.name,
            "scheme": self.scheme,
            "weight_bits": self.weight_bits,
            "activations_quantized": self.activations_quantized,
            "skip_modules": list(self.skip_modules),
            "implementation": self.implementation(),
        }


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
