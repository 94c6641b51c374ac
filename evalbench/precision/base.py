"""The interface every precision implements, whatever its runtime.

Each runtime's precisions live in its backend (``evalbench/backends/<runtime>/precision``), beside the
code that converts to them; ``conf/precision/<name>.yaml`` instantiates one and selects its backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class Precision:
    """A numeric format a model is converted to before it is measured.

    Subclasses set ``name``, ``scheme`` and ``weight_bits``; each one is also the typed Hydra config of
    its ``conf/precision/<name>.yaml`` file. ``backend`` names the runtime whose precision it is.
    """

    backend: ClassVar[str]
    weight_bits: ClassVar[int] = 32
    activations_quantized: ClassVar[bool] = False
    name: str = "fp32"
    scheme: str = "none"
    skip_modules: list[str] = field(default_factory=lambda: ["lm_head"])  # kept at full precision

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight as stored, scales included (the memory estimate's figure)."""
        return float(self.weight_bits)

    def check_supported(self) -> None:
        """Raise :class:`~evalbench.errors.PrecisionError` when this machine or build cannot run the precision."""

    def implementation(self) -> str:
        """The kernel (and its library) that runs the model's matmuls."""
        raise NotImplementedError

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
