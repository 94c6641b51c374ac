"""The Pareto front as a person reads it: one row per run, numbered as in the figure, in human units."""

from __future__ import annotations

import pandas as pd

from evalbench.analysis.recommend import Recommendation
from evalbench.report import units


def numbered_front(rec: Recommendation) -> pd.DataFrame:
    """The front's runs, least quality loss first, with ``quality_loss`` and ``front_number`` (1, 2, ...)."""
    front = rec.frontier.copy()
    if front.empty or rec.floor is None:
        return front.assign(quality_loss=pd.Series(dtype=float), front_number=pd.Series(dtype=int))
    front["quality_loss"] = rec.floor.losses(front)
    front = front.sort_values(["quality_loss", "decode_tokens_per_s"], ascending=[True, False])
    return front.assign(front_number=range(1, len(front) + 1))


def front_table(rec: Recommendation) -> pd.DataFrame:
    """Text cells: configuration, threads, batch, quality loss and speeds with intervals, memory in MiB/GiB;
    the recommended run starred."""
    front = numbered_front(rec)
    chosen = rec.config.name if rec.config is not None else None
    rows = [_row(rec, row, row.name == chosen) for _, row in front.iterrows()]
    return pd.DataFrame(rows, columns=COLUMNS)


COLUMNS = ["#", "configuration", "threads", "batch", "quality loss (95%)", "perplexity", "KLD",
           "decode tok/s (95%)", "prefill tok/s (95%)", "first token", "peak memory", "weights"]  # fmt: skip


def _row(rec: Recommendation, row: pd.Series, recommended: bool) -> list[str]:
    return [
        f"{row['front_number']}" + (" ★" if recommended else ""),
        f"{units.runtime(row['backend'])} {row['precision']}" + (f" ({row['levers']})" if row.get("levers") else ""),
        str(row["threads"]),
        str(row["batch_size"]),
        units.loss(rec.floor, row),
        _number(row.get("perplexity"), ".2f"),
        _number(row.get("kld_mean"), ".4f"),
        units.rate(row, "decode_tokens_per_s", short=True),
        units.rate(row, "prefill_tokens_per_s", short=True),
        units.seconds(row.get("ttft_s")),
        units.size(row.get("peak_rss_bytes")),
        units.size(row.get("weight_bytes")),
    ]


def _number(value: object, fmt: str) -> str:
    return format(float(value), fmt) if units.known(value) else "-"
