"""The README's table of a sample sweep: quality and speed of every configuration, read from its records.

    evalbench sweep=sample results_dir=results/sample        # or: make sample
    .venv/bin/python benchmarks/sample_table.py results/sample --threads 2

One row per configuration (backend and precision): perplexity and its ratio to torch fp32 on the
same tokens, mean KL divergence from the stored fp32 reference, decode tokens/s at batch 1 and
batch 4 (aggregate) and prefill tokens/s at batch 1, at the given thread count, and weight bytes.
"""

from __future__ import annotations

import argparse

import pandas as pd

import evalbench
from evalbench.analysis.objectives import configuration_order, with_configurations
from evalbench.report.export import markdown_table


def _speeds(runs: pd.DataFrame, threads: int) -> pd.DataFrame:
    at = runs[runs.threads == threads]
    decode = at.pivot_table(index="configuration", columns="batch_size", values="decode_tokens_per_s")
    prefill = at[at.batch_size == 1].set_index("configuration")["prefill_tokens_per_s"]
    return pd.DataFrame({f"decode b{b} tok/s": decode[b] for b in decode.columns} | {"prefill b1 tok/s": prefill})


def _quality(runs: pd.DataFrame) -> pd.DataFrame:
    first = runs.sort_values("started_at").groupby("configuration").first()
    return pd.DataFrame(
        {
            "perplexity": first.perplexity.round(3),
            "ppl ratio": first.ppl_ratio.round(4),
            "kld_mean": first.kld_mean.map(lambda v: f"{v:.5f}"),
            "weights MB": (first.weight_bytes / 1e6).round(0).astype(int),
        }
    )


def table(results_dir: str, threads: int) -> str:
    runs = with_configurations(evalbench.load_results(results_dir))
    runs = runs[runs.status == "ok"]
    joined = _quality(runs).join(_speeds(runs, threads).round(1)).reindex(configuration_order(runs))
    return markdown_table(joined.reset_index().rename(columns={"index": "configuration"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(table(args.results_dir, args.threads))


if __name__ == "__main__":
    main()
