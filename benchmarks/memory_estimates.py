"""Each run's measured memory peaks beside its memory estimate: as recorded, and as the current code makes it.

    .venv/bin/python benchmarks/memory_estimates.py results/7b

Works for any model the records name (its config is read, not its weights). Columns in GiB:
the peaks while loading (converting included), scoring and generating, the highest of them,
the recorded estimate, and the estimate of the code as it is now (with what the run's process
held before loading, as recorded). The last column says whether the highest peak, less the file
pages of the weights llama.cpp re-laid out on load (``repacked_weight_bytes``: clean, so the
kernel drops them when memory is short; the estimate does not count them), is above the estimate.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf

import evalbench
from evalbench.analysis.objectives import with_objectives
from evalbench.configuration import Configuration
from evalbench.metrics.memory_estimate import GIB, ModelShape, Workload
from evalbench.model.loader import checkpoint_dtype, load_config
from evalbench.model.source import resolve_source

PEAKS = ["load_peak_rss_bytes", "perplexity_peak_rss_bytes", "peak_rss_bytes"]
COLUMNS = [
    "configuration", "threads", "batch_size", *PEAKS, "peak_of_all", "repacked_weight_bytes", "memory_estimate_bytes",
    "estimate_now",
]  # fmt: skip


def recorded_node(run: pd.Series, group: str) -> dict:
    """The run's recorded ``config.<group>`` node, unflattened."""
    prefix = f"config.{group}."
    node: dict = {}
    for column, value in run.items():
        if column.startswith(prefix) and not (isinstance(value, float) and pd.isna(value)):
            *parents, leaf = column[len(prefix) :].split(".")
            target = node
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
    return node


def _shape(model: dict, cache_dir: Path) -> ModelShape:
    model_cfg = OmegaConf.create(model)
    config = load_config(model_cfg, cache_dir)
    gguf_source = resolve_source(model_cfg).gguf_file is not None
    return ModelShape.of(config, checkpoint_dtype(config), gguf_source, bool(model.get("trust_remote_code")))


def estimates_now(runs: pd.DataFrame) -> pd.Series:
    """Each run's estimate by the code as it is now (records keep the estimate of the code that ran)."""
    cache_dir = Path(os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench")).expanduser()
    shapes: dict[str, ModelShape] = {}

    def now(run: pd.Series) -> float:
        model = recorded_node(run, "model")
        key = repr(sorted(model.items()))
        if key not in shapes:
            shapes[key] = _shape(model, cache_dir)
        shape = shapes[key]
        groups = ("backend", "precision", "pruning")
        configuration = Configuration(*(instantiate(recorded_node(run, group)) for group in groups))
        sequence = int(run.prompt_tokens + run.new_tokens) if pd.notna(run.get("prompt_tokens")) else 0
        window = int(run.ppl_context) if pd.notna(run.get("ppl_context")) else 0
        process = run.get("memory_estimate_parts.process", 0)
        needed = configuration.memory_needed(shape, Workload(int(run.batch_size), sequence, window)).total
        return needed + (0 if pd.isna(process) else process)

    return runs.apply(now, axis=1)


def table(results_dir: str) -> pd.DataFrame:
    """The ok runs of ``results_dir`` with their peaks and estimates, in GiB."""
    runs = with_objectives(evalbench.load_results(results_dir))
    runs = runs[runs.status == "ok"].copy()
    runs["estimate_now"] = estimates_now(runs)
    runs["peak_of_all"] = runs[[c for c in PEAKS if c in runs]].max(axis=1)
    runs["repacked_weight_bytes"] = runs.get("repacked_weight_bytes", pd.Series(0.0, index=runs.index)).fillna(0)
    for column in [*PEAKS, "peak_of_all", "repacked_weight_bytes", "memory_estimate_bytes", "estimate_now"]:
        if column in runs:
            runs[column] = runs[column] / GIB
    out = runs[[c for c in COLUMNS if c in runs]].sort_values("configuration")
    out["needed_above_estimate_now"] = out["peak_of_all"] - out["repacked_weight_bytes"] > out["estimate_now"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    args = parser.parse_args()
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.2f}".format):
        print("(GiB)")
        print(table(args.results_dir).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
