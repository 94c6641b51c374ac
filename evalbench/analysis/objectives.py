"""Derived columns the analysis ranks by, and which direction is better for each column."""

from __future__ import annotations

import pandas as pd

from evalbench.errors import EvalbenchError

GROUP_COLUMNS = ["model", "env.machine_id"]
# Records written before backends were recorded: all torch, with these weight widths.
LEGACY_WEIGHT_BITS = {"fp32": 32, "bf16": 16, "int8": 8, "int8_dynamic": 8, "int4": 4}
BASELINE = ("torch", "fp32")  # the configuration the quality reference is computed at
HIGHER_IS_BETTER = {"decode_tokens_per_s", "prefill_tokens_per_s", "same_top_rate"}
HIGHER_IS_BETTER_PREFIXES = ("task.",)
DERIVED = {"ppl_ratio", "s_per_token"}
# Divergences from the reference: 0 is lossless, so a quality floor on them is absolute, not relative.
ABSOLUTE_QUALITY = {"kld_mean", "kld_median", "kld_p99", "kld_max", "delta_p_rms"}


def higher_is_better(column: str) -> bool:
    return column in HIGHER_IS_BETTER or (column.startswith(HIGHER_IS_BETTER_PREFIXES) and "stderr" not in column)


def baseline_configuration(runs: pd.DataFrame) -> str:
    """torch fp32 when measured, else the least compressed configuration present (most weight bits)."""
    ranked = runs.assign(is_reference=runs["configuration"] == " ".join(BASELINE)).sort_values(
        ["is_reference", "weight_bits", "configuration"], ascending=[False, False, True]
    )
    return str(ranked["configuration"].iloc[0])


def configuration_order(runs: pd.DataFrame) -> list[str]:
    """Configurations least to most compressed, torch first within a width: the order of every figure and table."""
    table = runs.drop_duplicates("configuration")
    return table.sort_values(["weight_bits", "backend", "precision"], ascending=[False, True, True])[
        "configuration"
    ].tolist()


def with_configurations(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``configuration`` ("<backend> <precision>") and fill ``backend`` and ``weight_bits`` of older records."""
    out = df.copy()
    backend = out["backend"] if "backend" in out else pd.Series(None, index=out.index, dtype=object)
    out["backend"] = backend.fillna("torch")
    legacy = out["precision"].map(LEGACY_WEIGHT_BITS)
    out["weight_bits"] = out["weight_bits"].fillna(legacy) if "weight_bits" in out else legacy
    out["configuration"] = out["backend"].astype(str) + " " + out["precision"].astype(str)
    return out


def successful(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"].copy()


def with_objectives(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``s_per_token`` (1 / decode tokens/s) and ``ppl_ratio`` where no run recorded it.

    A recorded ``ppl_ratio`` compares with the reference over the same tokens; a missing one is
    derived as perplexity over the mean perplexity of the group's baseline precision.
    """
    out = with_configurations(df)
    if "env.machine_id" not in out:
        out["env.machine_id"] = "unknown"
    out["s_per_token"] = 1.0 / out["decode_tokens_per_s"]
    recorded = out["ppl_ratio"].astype(float) if "ppl_ratio" in out else pd.Series(float("nan"), index=out.index)
    derived = pd.Series(float("nan"), index=out.index)
    ok = out["status"] == "ok"
    for _, group in out[ok].groupby(GROUP_COLUMNS, dropna=False):
        base = group[group["configuration"] == baseline_configuration(group)]
        derived.loc[group.index] = group["perplexity"] / base["perplexity"].mean()
    out["ppl_ratio"] = recorded.fillna(derived)
    return out


def check_columns(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        numeric = sorted(c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and "." not in c)
        raise EvalbenchError(f"unknown column {missing[0]!r}; valid: {sorted(DERIVED) + numeric}")
