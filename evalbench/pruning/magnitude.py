"""Unstructured magnitude pruning: the smallest weights of each layer set to zero (L1, per layer).

The matrices keep their shapes: on a CPU no dense kernel skips the zeros, so this shows the
quality cost of a sparsity a sparse kernel could exploit, not a speedup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn
from torch.nn.utils import prune

from evalbench.backends.torch.precision.base import linear_layers
from evalbench.errors import EvalbenchError
from evalbench.pruning.base import Pruning


@dataclass
class MagnitudePruning(Pruning):
    """``sparsity`` of every prunable layer's weights, the smallest by absolute value, zeroed."""

    method: ClassVar[str] = "magnitude"
    sparsity: float = 0.5

    def apply(self, model: nn.Module) -> dict[str, Any]:
        layers = linear_layers(model, self.skip_modules)
        if not layers:
            raise EvalbenchError(f"pruning=magnitude found no nn.Linear layer (skip_modules={self.skip_modules})")
        for _, layer in layers:
            prune.l1_unstructured(layer, "weight", amount=self.sparsity)
            prune.remove(layer, "weight")  # the mask is folded into the weight: plain zeros remain
        zeroed = sum(int((layer.weight == 0).sum()) for _, layer in layers)
        return {
            "pruning_zeroed_parameters": zeroed,
            "pruning_removed_parameters": 0,
            "pruning_layers": len(layers),
            "pruning_layer_parameters": sum(layer.weight.numel() for _, layer in layers),
        }
