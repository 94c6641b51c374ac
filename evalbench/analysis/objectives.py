"""Derived columns the analysis ranks by, and which direction is better for each column."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evalbench.errors import EvalbenchError

# A recommendation compares runs of one model, on one machine, scored on one token set.
GROUP_COLUMNS = ["model", "env.machine_id", "token_set"]
NO_TOKEN_SET = "not scored"
# Records written before backends were recorded: all torch, with these weight widths.
LEGACY_WEIGHT_BITS = {"fp32": 32, "bf16": 16, "int8": 8, "int8_dynamic": 8, "int4": 4}
LEGACY_REFERENCE_BACKEND = "torch"  # records written before the reference could be any backend's
LEGACY_REFERENCE = "torch fp32"  # and before it was recorded at all
# The one table of directions: the tree, the Pareto front, the quality floor and the figures all read it.
HIGHER_IS_BETTER = {"decode_tokens_per_s", "prefill_tokens_per_s", "same_top_rate", "roofline_fraction"}
LOWER_IS_BETTER = {
    "s_per_token", "ttft_s", "token_latency_p50_s", "token_latency_p90_s", "peak_rss_bytes", "weight_bytes",
    "memory_estimate_bytes", "perplexity", "ppl_ratio", "word_perplexity", "bits_per_byte",
    "kld_mean", "kld_median", "kld_p99", "kld_max", "delta_p_rms",
}  # fmt: skip
# lm-eval task metrics are scores (higher is better) except these, read from ``task.<task>.<metric>``.
LOWER_IS_BETTER_TASK_METRICS = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}
DERIVED = {"ppl_ratio", "s_per_token"}
DEFAULT_KV_CACHE_TYPE = "f16"  # llama.cpp's default; torch and ONNX Runtime record none
QUANTIZED_KV_CACHE_TYPES = {"q8_0", "q4_0"}
# Divergences from the reference: 0 is lossless, so a quality floor on them is absolute, not relative.
ABSOLUTE_QUALITY = {"kld_mean", "kld_median", "kld_p99", "kld_max", "delta_p_rms"}


def higher_is_better(column: str) -> bool:
    """Whether a larger value of ``column`` is better: throughputs, agreement and task scores, not perplexities,
    divergences, times or bytes. A column the table does not name is a cost (lower is better)."""
    if column.startswith("task."):
        parts = column.split(".")  # task.<task>.<metric>[.<filter>]
        metric = parts[2] if len(parts) > 2 else ""
        return "stderr" not in metric and metric not in LOWER_IS_BETTER_TASK_METRICS
    return column in HIGHER_IS_BETTER


def best_first(rows: pd.DataFrame, column: str, tie_break: str = "peak_rss_bytes") -> pd.DataFrame:
    """``rows`` sorted best ``column`` first (its direction from the one table), then least ``tie_break``."""
    by = [column, *([tie_break] if tie_break in rows and tie_break != column else [])]
    return rows.sort_values(by, ascending=[not higher_is_better(column), True][: len(by)], kind="stable")


def reference_configurations(runs: pd.DataFrame) -> set[str]:
    """The configurations the runs' quality was compared with ("<backend> <precision>"), as recorded."""
    if "reference_precision" not in runs:
        return {LEGACY_REFERENCE}
    legacy = LEGACY_REFERENCE_BACKEND + " " + runs["reference_precision"].astype(str)
    named = _column(runs, "reference_configuration", None)
    return set(named.where(named.notna(), legacy)[runs["reference_precision"].notna()])


def baseline_configuration(runs: pd.DataFrame) -> str:
    """The quality reference's configuration when measured, else the least compressed one present (most weight
    bits, torch first): the baseline follows the reference."""
    references = reference_configurations(runs)
    ranked = runs.assign(is_reference=runs["configuration"].isin(references)).sort_values(
        ["is_reference", "weight_bits", "configuration"], ascending=[False, False, True]
    )
    return str(ranked["configuration"].iloc[0])


def configuration_order(runs: pd.DataFrame) -> list[str]:
    """Configurations least to most compressed, torch first within a width: the order of every figure and table."""
    table = runs.drop_duplicates("configuration")
    return table.sort_values(["weight_bits", "backend", "precision"], ascending=[False, True, True])[
        "configuration"
    ].tolist()


def _column(df: pd.DataFrame, name: str, default: object) -> pd.Series:
    """``df[name]`` with ``default`` where missing (records written before the column existed)."""
    column = df[name] if name in df else pd.Series(default, index=df.index, dtype=object)
    return column.astype(object).where(column.notna(), default)


def levers(df: pd.DataFrame) -> pd.Series:
    """Each run's levers besides the precision, in words ("compiled, magnitude-pruned 50%"); "" for none."""
    words = pd.DataFrame(index=df.index)
    words["compile"] = _column(df, "backend.compile", False).map({True: "compiled"}).fillna("")
    words["kv"] = _column(df, "kv_cache", True).map({False: "no KV cache"}).fillna("")
    kv_type = _column(df, "backend.kv_cache_type", DEFAULT_KV_CACHE_TYPE)
    words["kv_type"] = ("KV " + kv_type.astype(str)).where(kv_type != DEFAULT_KV_CACHE_TYPE, "")
    method, sparsity = _column(df, "pruning_method", "none"), pd.to_numeric(_column(df, "pruning_sparsity", 0))
    pruned = method.astype(str) + "-pruned " + (100 * sparsity).round().astype(int).astype(str) + "%"
    words["pruning"] = pruned.where(method != "none", "")
    calibration = _column(df, "calibration", "none")
    words["calibration"] = calibration.astype(str).where(calibration != "none", "")
    load = _column(df, "load_mode", "mmap")
    words["load"] = ("load " + load.astype(str)).where(load != "mmap", "")
    words["affinity"] = _column(df, "affinity", "none").map({"cores": "pinned to cores"}).fillna("")
    return words.apply(lambda row: ", ".join(word for word in row if word), axis=1).astype(str)


def pruned(df: pd.DataFrame) -> pd.Series:
    """Runs of a pruned model."""
    return _column(df, "pruning_method", "none") != "none"


def lossy_levers(df: pd.DataFrame) -> pd.Series:
    """Runs whose levers change the model's numbers beyond its precision: pruned, or a quantized KV cache."""
    return pruned(df) | _column(df, "backend.kv_cache_type", DEFAULT_KV_CACHE_TYPE).isin(QUANTIZED_KV_CACHE_TYPES)


def with_configurations(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``configuration`` ("<backend> <precision>[ (<levers>)]"); fill ``backend`` and ``weight_bits`` of
    older records."""
    out = df.copy()
    backend = out["backend"] if "backend" in out else pd.Series(None, index=out.index, dtype=object)
    out["backend"] = backend.fillna("torch")
    legacy = out["precision"].map(LEGACY_WEIGHT_BITS)
    out["weight_bits"] = out["weight_bits"].fillna(legacy) if "weight_bits" in out else legacy
    out["levers"] = levers(out) if len(out) else pd.Series(dtype=object)
    out["configuration"] = out["backend"].astype(str) + " " + out["precision"].astype(str)
    with_levers = out["levers"] != ""
    out.loc[with_levers, "configuration"] += " (" + out.loc[with_levers, "levers"] + ")"
    return out


def token_sets(df: pd.DataFrame) -> pd.Series:
    """Which tokens a run's quality was scored on: the scored ids' hash and the scoring window, in words.

    A run that scored nothing (it failed, or measured speed only) joins its model's token set on
    its machine when there is only one.
    """
    if "eval_token_hash" not in df:
        return pd.Series(NO_TOKEN_SET, index=df.index, dtype=object)
    words = "tokens " + df["eval_token_hash"].astype(str).str[:8]
    for column, name in (("eval_tokens", "n"), ("ppl_context", "context")):
        if column in df:
            words += f" {name} " + df[column].astype("Int64").astype(str)
    sets = words.where(df["eval_token_hash"].notna(), NO_TOKEN_SET)
    for _, group in df.groupby(["model", "env.machine_id"], dropna=False):
        known = sets[group.index][sets[group.index] != NO_TOKEN_SET].unique()
        if len(known) == 1:
            sets[group.index] = known[0]
    return sets


def successful(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"].copy()


def with_objectives(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``s_per_token`` (1 / decode tokens/s) and ``ppl_ratio`` with its 95% interval, against the baseline.

    ``ppl_ratio`` always compares with the baseline the quality floor is read against (the reference,
    else the least compressed configuration) on the same tokens; the ratio a run recorded against
    ``quality.reference`` is kept as ``ppl_ratio_vs_reference``.
    """
    out = with_configurations(df if df.index.is_unique else df.reset_index(drop=True))
    if "env.machine_id" not in out:
        out["env.machine_id"] = "unknown"
    out["token_set"] = token_sets(out)
    out["s_per_token"] = 1.0 / out["decode_tokens_per_s"]
    if "ppl_ratio_vs_reference" in out:  # already derived: a table passes through here more than once
        return out
    for suffix in ("", "_ci_low", "_ci_high"):
        recorded = out.get(f"ppl_ratio{suffix}", np.nan)
        out[f"ppl_ratio_vs_reference{suffix}"] = pd.to_numeric(recorded, errors="coerce")
        out[f"ppl_ratio{suffix}"] = np.nan
    ok = out["status"] == "ok"
    for _, group in out[ok].groupby(GROUP_COLUMNS, dropna=False):
        out.loc[group.index, ["ppl_ratio", "ppl_ratio_ci_low", "ppl_ratio_ci_high"]] = ratio_to_baseline(group)
    return out


def ratio_to_baseline(group: pd.DataFrame) -> np.ndarray:
    """Perplexity over the baseline's, with a 95% interval where both were scored against one reference.

    Both ratios to the reference are paired per token, so their quotient's log-interval is the
    two log-intervals combined in quadrature (conservative: it ignores their positive correlation).
    Without a recorded ratio, the perplexities' quotient, with no interval.
    """
    base = group[group["configuration"] == baseline_configuration(group)]
    derived = group["perplexity"].to_numpy(dtype=float) / base["perplexity"].mean()
    out = np.column_stack([derived, np.full(len(group), np.nan), np.full(len(group), np.nan)])
    paired = group["ppl_ratio_vs_reference_ci_low"].notna()
    if "reference_key" in group:
        base_keys = base["reference_key"].dropna().unique()
        paired &= (group["reference_key"] == base_keys[0]) if len(base_keys) == 1 else False
    base_paired = base[base.index.isin(group.index[paired])]
    if base_paired.empty or not paired.any():
        return out
    log_base, half_base = _log_interval(base_paired).mean(axis=0)
    log_run, half_run = _log_interval(group[paired]).T
    half = np.sqrt(half_run**2 + half_base**2)
    centre = log_run - log_base
    out[paired.to_numpy()] = np.column_stack([np.exp(centre), np.exp(centre - half), np.exp(centre + half)])
    return out


def _log_interval(rows: pd.DataFrame) -> np.ndarray:
    """Per row: log of the recorded ratio to the reference, and the half-width of its log-interval."""
    low, high = (np.log(rows[f"ppl_ratio_vs_reference{s}"].to_numpy(dtype=float)) for s in ("_ci_low", "_ci_high"))
    return np.column_stack([np.log(rows["ppl_ratio_vs_reference"].to_numpy(dtype=float)), (high - low) / 2])


def check_columns(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        numeric = sorted(c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and "." not in c)
        raise EvalbenchError(f"unknown column {missing[0]!r}; valid: {sorted(DERIVED) + numeric}")
