"""Calibration for data-aware quantization: which method, on how many tokens, and the tokens themselves.

``calibration=none`` quantizes round-to-nearest. The other methods read the model's activations
on calibration text to choose the quantized weights: llama.cpp's importance matrix (``imatrix``),
NNCF's AWQ (``awq``) and GPTQ (``gptq``). Each backend runs the methods it offers and refuses
the others in one line. The calibration tokens are the dataset's last ones, apart from those
perplexity scores (``evalbench/pruning/calibration.py``); the runner sets them before loading.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from evalbench.errors import EvalbenchError


@dataclass
class Calibration:
    """No calibration: weights rounded to the nearest level. Each method is also the typed Hydra config of its
    ``conf/calibration/<method>.yaml`` file."""

    method: ClassVar[str] = "none"
    samples: int = 0  # calibration sequences
    sequence_length: int = 0  # tokens each
    # Set by the runner before loading: the calibration sequences, and whether they overlap the scored tokens.
    windows: list[torch.Tensor] = field(default_factory=list, init=False, repr=False, compare=False)
    overlaps_scored: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    @property
    def tokens(self) -> int:
        """Calibration tokens in all."""
        return self.samples * self.sequence_length

    def __post_init__(self) -> None:
        for key in ("samples", "sequence_length"):
            value = getattr(self, key)
            if self.enabled and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise EvalbenchError(f"calibration.{key}={value!r} is invalid; valid: an integer >= 1")

    def set_tokens(self, ids: torch.Tensor, overlaps_scored: bool) -> None:
        """Use ``ids`` (``tokens`` of them) as ``samples`` sequences of ``sequence_length``."""
        self.windows = list(ids[: self.tokens].split(self.sequence_length))
        self.overlaps_scored = overlaps_scored

    def key(self) -> str:
        """What the calibrated weights depend on: the method, its settings and the tokens (a digest)."""
        tokens = hashlib.sha256(b"".join(w.numpy().astype("int64").tobytes() for w in self.windows)).hexdigest()
        return f"{self.method}|{sorted(self.describe().items())}|{tokens[:16]}"

    def nncf_arguments(self) -> dict[str, Any]:
        """The method's ``nncf.compress_weights`` switches (NNCF's methods only)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The fields naming a calibrated configuration; none for ``none``, so that every uncalibrated one keeps the
        description (and the keys of its stored reference and scores) it had before calibration existed. Every
        record says ``calibration`` all the same."""
        if not self.enabled:
            return {}
        return {
            "calibration": self.method,
            "calibration_samples": self.samples,
            "calibration_sequence_length": self.sequence_length,
        }

    def record_fields(self) -> dict[str, Any]:
        """What the run calibrated on (set after loading)."""
        if not self.enabled:
            return {}
        return {
            "calibration_tokens": sum(len(w) for w in self.windows),
            "calibration_overlaps_scored": self.overlaps_scored,
        }


@dataclass
class ImportanceMatrix(Calibration):
    """llama.cpp's importance matrix: the mean squared input of every weight's columns, which its k-quants (and
    q4_0, q8_0) weigh the rounding error by."""

    method: ClassVar[str] = "imatrix"
    samples: int = 32
    sequence_length: int = 512


@dataclass
class NNCFCalibration(Calibration):
    """A data-aware method of ``nncf.compress_weights``, switched on by its own argument (``awq=True``,
    ``gptq=True``), optionally followed by scale estimation (the group scales fitted to the layer outputs)."""

    samples: int = 32
    sequence_length: int = 512
    scale_estimation: bool = True

    def nncf_arguments(self) -> dict[str, Any]:
        return {self.method: True, "scale_estimation": self.scale_estimation}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "calibration_scale_estimation": self.scale_estimation}


@dataclass
class AWQ(NNCFCalibration):
    """NNCF's activation-aware weight quantization: channels scaled by their activations before int4 rounding."""

    method: ClassVar[str] = "awq"


@dataclass
class GPTQ(NNCFCalibration):
    """NNCF's GPTQ: each layer's int4 weights rounded column by column, correcting the error with its inputs'
    second moments."""

    method: ClassVar[str] = "gptq"
    scale_estimation: bool = False
