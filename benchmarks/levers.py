"""The levers beside quantization, measured on the sample model: compile, KV cache, pruning, load mode, affinity.

Runs five small sweeps of the sample model into one results folder (each configuration in its own
process, so load time and peak memory are its own), then prints one table:

    .venv/bin/python benchmarks/levers.py results/levers            # measure, then print
    .venv/bin/python benchmarks/levers.py results/levers --print     # print what is recorded

Every sweep runs at 2 threads and batch 1 on 2048 scored tokens; each lever is compared with the
same precision without it, in the same run. Memory columns are in MiB: the highest peak of the run
(loading, scoring, generation) beside the memory estimate the current code makes for it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pandas as pd
from memory_estimates import estimates_now

import evalbench
from evalbench.analysis.objectives import with_objectives

COMMON = [
    "threads=2",
    "batch_size=1",
    "perplexity.max_tokens=2048",
    "speed.machine_probe_wait_s=10",
    "report.enabled=false",
]
SWEEPS = {
    "compile": ["precision=fp32,int8,int4", "backend.compile=false,true"],
    "kv_cache": ["precision=fp32", "speed.kv_cache=false"],
    "pruning": ["precision=fp32,int8", "pruning=magnitude,structured"],
    "load_mode": ["precision=fp32", "backend.load_mode=read"],
    "llama_cpp": ["precision=q8_0", "backend.kv_cache_type=f16,q8_0,q4_0", "backend.load_mode=mmap,read"],
    "affinity": ["precision=int8", "affinity=cores"],
}
COLUMNS = [
    "configuration", "decode_tokens_per_s", "decode_tokens_per_s_ci_low", "decode_tokens_per_s_ci_high",
    "ppl_ratio", "kld_mean", "compile_time_s", "load_time_s", "load_peak_rss_bytes", "peak_rss_bytes",
    "parameters", "peak_of_all_bytes", "memory_estimate_now_bytes", "status",
]  # fmt: skip


def measure(results_dir: str) -> None:
    for name, overrides in SWEEPS.items():
        print(f"== {name}", flush=True)
        command = [sys.executable, "-m", "evalbench", "-m", *overrides, *COMMON, f"results_dir={results_dir}"]
        subprocess.run(command, check=False)


def table(results_dir: str) -> pd.DataFrame:
    runs = with_objectives(evalbench.load_results(results_dir))
    runs["memory_estimate_now_bytes"] = estimates_now(runs)
    runs["peak_of_all_bytes"] = runs[["load_peak_rss_bytes", "perplexity_peak_rss_bytes", "peak_rss_bytes"]].max(axis=1)
    for column in ("load_peak_rss_bytes", "peak_rss_bytes", "peak_of_all_bytes", "memory_estimate_now_bytes"):
        runs[column] = runs[column] / 2**20
    return runs[[c for c in COLUMNS if c in runs]].sort_values("configuration")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("--print", action="store_true", help="only print what is recorded")
    args = parser.parse_args()
    if not args.print:
        measure(args.results_dir)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3g}".format):
        print("(memory columns in MiB)")
        print(table(args.results_dir).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
