"""What data-aware quantization costs and gains: each calibrated configuration beside its uncalibrated one.

    evalbench -m precision=q4_k_m calibration=none,imatrix threads=2 perplexity.max_tokens=4096 \
        speed.enabled=false report.enabled=false results_dir=results/calibration
    evalbench -m precision=ov_int4 calibration=none,awq,gptq threads=2 perplexity.max_tokens=4096 \
        speed.enabled=false report.enabled=false results_dir=results/calibration
    .venv/bin/python benchmarks/calibration_table.py results/calibration

One row per configuration: the calibration tokens and seconds (computing the importance matrix, or
NNCF's calibrated compression as a whole), perplexity and its ratio to the reference on the same
tokens, mean KL divergence from the reference, and the change of each against the same precision
uncalibrated.
"""

from __future__ import annotations

import argparse

import pandas as pd

import evalbench
from evalbench.analysis.objectives import with_configurations
from evalbench.report.export import markdown_table


def table(results_dir: str) -> str:
    runs = with_configurations(evalbench.load_results(results_dir))
    runs = runs[runs.status == "ok"].sort_values("started_at").groupby("configuration").first()
    plain = runs[runs.calibration == "none"].set_index(["backend", "precision"])
    base = plain.reindex(pd.MultiIndex.from_frame(runs[["backend", "precision"]]))
    rows = pd.DataFrame(
        {
            "calibration tokens": runs.get("calibration_tokens", pd.Series(index=runs.index)).fillna(0).astype(int),
            "calibration s": runs.get("calibration_time_s", pd.Series(index=runs.index)).round(1).fillna("-"),
            "perplexity": runs.perplexity.round(3),
            "ppl ratio": runs.ppl_ratio.round(4),
            "kld_mean": runs.kld_mean.round(4),
            "KLD vs none": (runs.kld_mean.to_numpy() / base.kld_mean.to_numpy()).round(2),
        },
        index=runs.index,
    )
    order = runs.sort_values(["backend", "precision", "calibration"], key=lambda c: c.replace("none", "")).index
    return markdown_table(rows.loc[order].reset_index())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    print(table(parser.parse_args().results_dir))


if __name__ == "__main__":
    main()
