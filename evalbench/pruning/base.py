"""The interface every pruning method implements, and the layers it may touch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from evalbench.errors import EvalbenchError


@dataclass
class Pruning:
    """No pruning; subclasses remove or zero weights of the FP32 model before the precision converts it.

    Each method is also the typed Hydra config of its ``conf/pruning/<method>.yaml`` file.
    """

    method: ClassVar[str] = "none"
    sparsity: float = 0.0
    skip_modules: list[str] = field(default_factory=lambda: ["lm_head"])
    calibration_tokens: int = 0  # tokens whose activations a method reads (0: it reads none)
    # The calibration token ids, set by the runner before loading (``evalbench/pruning/calibration.py``).
    calibration: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def enabled(self) -> bool:
        """Whether this method prunes anything (every method but ``none``)."""
        return self.method != "none"

    def __post_init__(self) -> None:
        if self.enabled and not 0 < self.sparsity < 1:
            raise EvalbenchError(f"pruning.sparsity={self.sparsity} is invalid; valid: a number in (0, 1)")

    def apply(self, model: nn.Module) -> dict[str, Any]:
        """Prune ``model`` in place; return the record fields saying what was zeroed and removed."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The fields recorded for every run, pruned or not."""
        return {"pruning_method": self.method, "pruning_sparsity": self.sparsity}
