"""Do two runs of the same sweep on the same machine agree? Decode speed per configuration and the recommendation.

Run a sweep twice into two folders, then compare them (20 configurations of the sample sweep):

    for r in a b; do evalbench sweep=sample 'hydra.sweeper.params.precision="fp32,int8,q8_0,q4_0,ort_int4"' \
        perplexity.max_tokens=2048 results_dir=results/rep-$r; done
    .venv/bin/python benchmarks/repeatability.py results/rep-a results/rep-b --max-quality-loss 0.01 \
        --min-decode-tokens-per-s 0

For each configuration it prints both decode tokens/s with their 95% intervals, whether each
run's mean lies inside the other's interval and whether the intervals overlap; then the
recommendation made from each run, and how often each run's machine probe caught a slow spell
and timed a configuration again. ``--check`` exits 1 when the recommendations differ.
"""

from __future__ import annotations

import argparse
import math
import sys

import pandas as pd

import evalbench
from evalbench.analysis.objectives import with_configurations
from evalbench.analysis.recommend import Constraint

KEYS = ["model", "backend", "precision", "threads", "batch_size"]
FIGURE = "decode_tokens_per_s"


def with_recommenders_interval(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``wide_low`` and ``wide_high``: the decode speed's interval as the recommender reads it."""
    target = Constraint(FIGURE, 0.0, True)
    wide = [target.interval(row) for _, row in runs.iterrows()]
    return runs.assign(wide_low=[w[0] for w in wide], wide_high=[w[1] for w in wide])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--max-quality-loss", type=float, default=0.05)
    parser.add_argument("--min-decode-tokens-per-s", type=float, default=25.0)
    parser.add_argument("--check", action="store_true", help="exit 1 when the recommendations differ")
    args = parser.parse_args()

    runs = [with_configurations(evalbench.load_results(folder)) for folder in (args.first, args.second)]
    columns = [*KEYS, FIGURE, f"{FIGURE}_ci_low", f"{FIGURE}_ci_high", f"{FIGURE}_cv", "wide_low", "wide_high"]
    a, b = (with_recommenders_interval(r[r.status == "ok"])[columns] for r in runs)
    both = a.merge(b, on=KEYS, suffixes=("_a", "_b"))
    wide = (both.wide_low_a <= both.wide_high_b) & (both.wide_low_b <= both.wide_high_a)
    spread = (both[f"{FIGURE}_b"] / both[f"{FIGURE}_a"]).map(math.log).abs()
    inside_a = both[f"{FIGURE}_b"].between(both[f"{FIGURE}_ci_low_a"], both[f"{FIGURE}_ci_high_a"])
    inside_b = both[f"{FIGURE}_a"].between(both[f"{FIGURE}_ci_low_b"], both[f"{FIGURE}_ci_high_b"])
    overlap = (both[f"{FIGURE}_ci_low_a"] <= both[f"{FIGURE}_ci_high_b"]) & (
        both[f"{FIGURE}_ci_low_b"] <= both[f"{FIGURE}_ci_high_a"]
    )
    both = both.assign(
        ratio=both[f"{FIGURE}_b"] / both[f"{FIGURE}_a"], b_in_a_ci=inside_a, a_in_b_ci=inside_b, overlap=overlap
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(both.sort_values(KEYS).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        f"\n{len(both)} configurations: second mean inside the first's 95% CI for {int(inside_a.sum())}, "
        f"first inside the second's for {int(inside_b.sum())}, intervals overlap for {int(overlap.sum())}; "
        f"median ratio {both.ratio.median():.3f} (min {both.ratio.min():.3f}, max {both.ratio.max():.3f})\n"
        f"the recommender's intervals (within-run 95% CI and speed_repeatability in quadrature) overlap for "
        f"{int(wide.sum())} of {len(both)}; 90th percentile of |log ratio| {spread.quantile(0.9):.3f}"
    )
    for label, table in zip(("first", "second"), runs, strict=True):
        if "machine_probe_retimes" in table:
            retimed = table[table.machine_probe_retimes > 0]
            names = retimed.configuration + " t" + retimed.threads.astype(str) + " b" + retimed.batch_size.astype(str)
            worst = table.machine_probe_slowdowns.map(max, na_action="ignore").max()
            print(f"{label} run: {len(retimed)} configuration(s) timed again after a slow spell (worst probe "
                  f"slowdown {worst:.2f}x): {', '.join(names)}")  # fmt: skip
    choices = []
    for label, table in zip(("first", "second"), runs, strict=True):
        rec = evalbench.recommend(
            table, max_quality_loss=args.max_quality_loss, min_decode_tokens_per_s=args.min_decode_tokens_per_s
        )
        chosen = None if rec.config is None else tuple(rec.config[k] for k in KEYS)
        choices.append(chosen)
        print(f"\n{label} run: {str(rec).splitlines()[-1]}")
    same = choices[0] == choices[1]
    print(f"\nsame recommendation: {same}")
    return 1 if args.check and not same else 0


if __name__ == "__main__":
    sys.exit(main())
