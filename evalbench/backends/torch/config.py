"""Settings of the eager PyTorch backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evalbench.backends.base import BackendConfig


@dataclass
class TorchConfig(BackendConfig):
    """Eager PyTorch: Transformers' ``generate`` and forward passes, precisions from ``conf/precision``."""

    backend_class: ClassVar[str] = "evalbench.backends.torch.backend.TorchBackend"
    name: ClassVar[str] = "torch"
