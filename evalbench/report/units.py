"""Figures in the units a person reads: MiB and GiB, percentages, tokens/s with their 95% interval."""

from __future__ import annotations

import pandas as pd

from evalbench.analysis.recommend import QualityFloor
from evalbench.backends.base import runtime_name


def known(value: object) -> bool:
    """A recorded figure, not a missing one (None or NaN)."""
    return not pd.isna(value)


def size(n_bytes: object) -> str:
    """``1.17 GiB``, ``858 MiB``, ``1.3 MiB``; ``-`` when unknown."""
    if not known(n_bytes):
        return "-"
    value = float(n_bytes)
    if value >= 2**30:
        return f"{value / 2**30:.2f} GiB"
    return f"{value / 2**20:.0f} MiB" if value >= 10 * 2**20 else f"{value / 2**20:.1f} MiB"


def interval(low: object, high: object, fmt: str) -> str:
    """`` (95%: low to high)``, or nothing when either end is unknown."""
    if not (known(low) and known(high)):
        return ""
    return f" (95%: {format(float(low), fmt)} to {format(float(high), fmt)})"


def rate(row: pd.Series, column: str, short: bool = False) -> str:
    """A tokens/s figure with its recorded 95% interval: ``107.2 tok/s (95%: 101.3 to 113.0)``; ``short``:
    ``107.2 (101.3-113.0)`` for a table whose header gives the unit."""
    if not known(row.get(column)):
        return "-"
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if short:
        return f"{row[column]:.1f}" + (f" ({low:.1f}-{high:.1f})" if known(low) and known(high) else "")
    return f"{row[column]:.1f} tok/s" + interval(low, high, ".1f")


def loss(floor: QualityFloor, row: pd.Series, label: str = "") -> str:
    """``row``'s quality loss with its 95% interval when it has one: ``+0.41% (95%: +0.10% to +0.72%)``, the
    interval after ``label``."""
    low, high = floor.interval(row)
    spread = f" ({label}{floor.format_loss(low)} to {floor.format_loss(high)})" if low != high else ""
    return floor.format_loss(row["quality_loss"]) + spread


def count(value: object) -> str:
    return f"{int(value)}" if known(value) else "?"


def seconds(value: object) -> str:
    if not known(value):
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def runtime(backend: str) -> str:
    """``llama.cpp`` for ``llama_cpp``: the backend's own name for its runtime."""
    return runtime_name(str(backend))


def configuration_words(row: pd.Series) -> str:
    """``llama.cpp q8_0 (8-bit weights), 2 threads, batch size 1``; the levers after the precision."""
    bits = f"{row['weight_bits']:g}-bit weights" if known(row.get("weight_bits")) else "weights as stored"
    levers = f", {row['levers']}" if row.get("levers") else ""
    threads = f"{row['threads']} thread" + ("s" if row["threads"] != 1 else "")
    return f"{runtime(row['backend'])} {row['precision']} ({bits}{levers}), {threads}, batch size {row['batch_size']}"
