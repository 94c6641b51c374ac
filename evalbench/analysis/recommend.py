"""The recommendation: the project's decision tree, followed and shown step by step.

1. Baseline: the model at fp32 (else the least compressed precision measured, said so).
2. No loss allowed: the cheapest lossless precision (16 bits or more, no lossy lever) whose quality is
   indistinguishable from the baseline's; when none meets the performance target, the answer is
   distillation to a smaller model.
3. Loss allowed, with a performance target: INT8 first, the cheapest INT8 run meeting the floor and
   every target; else fewer bits (INT4 and below) or a pruned model; else 16/32-bit runs ("INT8 and
   fewer bits lose too much"); else say which constraint failed by how much and name the next levers.
4. Loss allowed, no target: each step of 3 is walked and named, and the answer is the cheapest run
   meeting the floor, whatever its bits, with the step it came from.
5. Dominance check: a run meeting what the pick meets and better beyond noise on quality or cost
   replaces it.

"Cheapest" is the best measured cost (seconds per decoded token by default; its direction, like every
column's, from ``objectives.HIGHER_IS_BETTER``). A constraint holds when its 95% confidence interval
clears the target; an interval that straddles the target is borderline and chosen only when nothing
passes clearly. A run whose quality loss interval reaches 0 (or that matches the reference exactly:
KLD 0 or the same top token everywhere) is indistinguishable from the baseline and meets every floor,
0 included; so a looser floor never gives a dearer answer when there is no target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from evalbench.analysis.objectives import (
    ABSOLUTE_QUALITY,
    GROUP_COLUMNS,
    baseline_configuration,
    best_first,
    check_columns,
    higher_is_better,
    lossy_levers,
    pruned,
    reference_configurations,
    with_objectives,
)
from evalbench.analysis.pareto import pareto_front
from evalbench.errors import EvalbenchError
from evalbench.stats import t95

PASS, BORDERLINE, FAIL = "pass", "borderline", "fail"
# Timed figures: their intervals also carry the machine's sweep-to-sweep variation (``speed.repeatability``).
TIMINGS = {"decode_tokens_per_s", "prefill_tokens_per_s", "ttft_s"}
NEXT_LEVERS = (
    "prune the model (structured pruning, then re-measure)",
    "distil into a smaller model",
    "relax the quality floor or the performance target",
)


@dataclass
class Step:
    """One step of the decision tree: what it looked at, and why it went on or stopped."""

    name: str
    rows: pd.DataFrame
    outcome: str
    reason: str


@dataclass
class Recommendation:
    config: pd.Series | None
    verdict: str  # "recommend" | "distillation" | "nothing meets"
    trace: list[Step] = field(default_factory=list)
    frontier: pd.DataFrame = field(default_factory=pd.DataFrame)
    borderline: bool = False
    floor: QualityFloor | None = None

    def __str__(self) -> str:
        lines = []
        for number, step in enumerate(self.trace, 1):
            lines.append(f"{number}. {step.name}: {step.outcome}. {step.reason}")
        if self.config is not None:
            row = self.config
            head = "RECOMMENDED (borderline)" if self.borderline else "RECOMMENDED"
            same = ", indistinguishable from the baseline" if self.floor.lossless(row) else ""
            lines.append(
                f"{head}: {row['model']} {row['configuration']} threads={row['threads']} batch_size={row['batch_size']}"
                f" ({row['decode_tokens_per_s']:.1f} decode tok/s, {self.floor.metric} loss"
                f" {self.floor.format_loss(row['quality_loss'])}{same})"
            )
        else:
            lines.append(f"NO CONFIGURATION RECOMMENDED: {self.verdict}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Constraint:
    """A target on one column, checked against the column's 95% confidence interval."""

    column: str
    target: float
    higher_better: bool

    def label(self) -> str:
        return f"{self.column} {'>=' if self.higher_better else '<='} {self.target:g}"

    def interval(self, row: pd.Series) -> tuple[float, float]:
        """The figure's 95% interval within its run, widened for a timing by the sweep-to-sweep variation the
        machine showed (``speed_repeatability``, relative, combined in quadrature)."""
        value = float(row[self.column])
        half = self._within_run_half_width(row, value)
        repeatability = row.get("speed_repeatability")
        if self.column in TIMINGS and repeatability is not None and not pd.isna(repeatability):
            half = math.hypot(half, float(repeatability) * value)
        return value - half, value + half

    def _within_run_half_width(self, row: pd.Series, value: float) -> float:
        low, high = row.get(f"{self.column}_ci_low"), row.get(f"{self.column}_ci_high")
        if low is not None and high is not None and not (pd.isna(low) or pd.isna(high)):
            return max(value - float(low), float(high) - value)  # recorded with the figure
        std = row.get(f"{self.column}_std")
        repeats = row.get("speed_repeats")
        if std is None or pd.isna(std) or not repeats or pd.isna(repeats) or repeats < 2:
            return 0.0
        return t95(int(repeats) - 1) * float(std) / math.sqrt(float(repeats))

    def meets(self, value: float) -> bool:
        return value >= self.target if self.higher_better else value <= self.target

    def check(self, row: pd.Series) -> str:
        low, high = self.interval(row)
        if pd.isna(low):
            return FAIL
        worst, best = (low, high) if self.higher_better else (high, low)
        return PASS if self.meets(worst) else BORDERLINE if self.meets(best) else FAIL

    def shortfall(self, rows: pd.DataFrame) -> str:
        """How far the best of ``rows`` is from the target."""
        values = rows[self.column].dropna()
        if values.empty:
            return f"{self.column}: not measured"
        best = values.max() if self.higher_better else values.min()
        gap = (self.target - best) / abs(self.target) if self.target else float("inf")
        return f"{self.label()} missed: best {best:.4g} ({abs(gap):.1%} short)"


class QualityFloor:
    """The quality floor: loss of ``metric`` against the baseline, with its recorded uncertainty.

    The loss is relative (perplexity, ppl_ratio, same_top_rate, task scores) or, for divergences
    from the reference, the value itself above the baseline's (kld_mean <= 0.01 means
    ``quality=kld_mean max_quality_loss=0.01``). Uncertainty comes from ``ppl_ratio_ci_*`` for
    perplexity and from a ``<metric>_stderr`` column (95%: 1.96 stderr) where there is one.
    """

    def __init__(self, metric: str, baseline: float, max_loss: float) -> None:
        self.metric, self.baseline, self.max_loss = metric, baseline, max_loss
        self.higher_better = higher_is_better(metric)

    @property
    def absolute(self) -> bool:
        return self.metric in ABSOLUTE_QUALITY

    @property
    def threshold(self) -> float:
        """The metric's value at the floor."""
        if self.absolute:
            return self.baseline + self.max_loss
        return self.baseline * (1 - self.max_loss if self.higher_better else 1 + self.max_loss)

    def format_loss(self, loss: float) -> str:
        """``+0.008`` (absolute), ``+0.35%``; a relative loss under 0.1% to three decimals (``-0.031%``)."""
        if self.absolute:
            return f"{loss:+.4g}"
        percent = 100 * loss
        return f"{percent:+.2f}%" if abs(percent) >= 0.1 else f"{percent:+.3f}%"

    def describe(self) -> str:
        if self.absolute:
            return f"{self.metric} <= {self.threshold:.4g} (baseline + {self.max_loss:g})"
        return f"{self.metric} within {self.max_loss:.1%} of the baseline"

    def loss(self, value: float) -> float:
        if self.absolute:
            return value - self.baseline
        return (1 - value / self.baseline) if self.higher_better else (value / self.baseline - 1)

    def losses(self, runs: pd.DataFrame) -> pd.Series:
        """Each run's loss; for perplexity the ratio to the baseline on the same tokens, minus one."""
        if self.metric == "perplexity":
            return runs["ppl_ratio"] - 1
        return runs[self.metric].map(self.loss)

    def interval(self, row: pd.Series) -> tuple[float, float]:
        """The 95% interval of ``row``'s loss: from ``ppl_ratio_ci_*`` for perplexity, else 1.96 stderr."""
        loss = row["quality_loss"]
        stderr = row.get(f"{self.metric}_stderr", float("nan"))
        if self.metric in ("perplexity", "ppl_ratio") and not pd.isna(row.get("ppl_ratio_ci_low", float("nan"))):
            return row["ppl_ratio_ci_low"] - 1, row["ppl_ratio_ci_high"] - 1
        if not pd.isna(stderr):
            low, high = sorted(
                (self.loss(row[self.metric] - 1.96 * stderr), self.loss(row[self.metric] + 1.96 * stderr))
            )
            return low, high
        return loss, loss

    def lossless(self, row: pd.Series) -> bool:
        """Indistinguishable from the baseline: the loss interval reaches 0, or the run matches the reference
        the baseline is (``identical_to_baseline``: KLD 0 or the same top token everywhere)."""
        return not pd.isna(row["quality_loss"]) and _lossless(row, self.interval(row)[0])

    def check(self, row: pd.Series) -> str:
        """PASS when the loss interval is within the floor or reaches 0 (lossless meets every floor), BORDERLINE
        when it straddles the floor, else FAIL: so a run passing a floor passes every looser one."""
        if pd.isna(row["quality_loss"]):
            return FAIL
        low, high = self.interval(row)
        if high <= self.max_loss or _lossless(row, low):
            return PASS
        return BORDERLINE if low <= self.max_loss else FAIL


def _lossless(row: pd.Series, low: float) -> bool:
    """``row`` matches the baseline's reference exactly, or its loss interval (from ``low``) reaches 0."""
    return bool(row.get("identical_to_baseline", False)) or low <= 0


def cost_interval(row: pd.Series, cost: str) -> tuple[float, float, float]:
    """A run's cost and its 95% interval as (low, value, high), oriented so that lower is cheaper: a cost
    where higher is better (``decode_tokens_per_s``) is negated; seconds per token is read from the
    decode speed's interval."""
    if cost == "s_per_token":
        low, high = Constraint("decode_tokens_per_s", 0.0, True).interval(row)
        return (1 / high if high > 0 else math.inf), float(row[cost]), (1 / low if low > 0 else math.inf)
    low, high = Constraint(cost, 0.0, False).interval(row)
    if higher_is_better(cost):
        return -high, -float(row[cost]), -low
    return low, float(row[cost]), high


def _describe(rows: pd.DataFrame) -> str:
    return ", ".join(
        f"{r['configuration']}/t{r['threads']}/b{r['batch_size']} ({r['decode_tokens_per_s']:.1f} tok/s)"
        for _, r in rows.iterrows()
    )


def _checks(rows: pd.DataFrame, floor: QualityFloor, constraints: list[Constraint]) -> pd.DataFrame:
    """PASS, BORDERLINE or FAIL of every row against the floor (column ``quality``) and each constraint."""
    return pd.DataFrame(
        {"quality": rows.apply(floor.check, axis=1), **{c.label(): rows.apply(c.check, axis=1) for c in constraints}},
        index=rows.index,
        dtype=object,
    )


def _meeting(rows: pd.DataFrame, checks: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The rows clearly meeting the floor and every constraint; else those borderline on some (True)."""
    clear = (checks == PASS).all(axis=1)
    close = ~(checks == FAIL).any(axis=1) & (checks == BORDERLINE).any(axis=1)
    return (rows[clear], False) if clear.any() else (rows[close], True)


def _evaluate(
    name: str, rows: pd.DataFrame, floor: QualityFloor, constraints: list[Constraint], cost: str, quality_note: str
) -> tuple[Step, pd.Series | None, bool]:
    """Check ``rows`` against the floor and every constraint; pick the cheapest that passes (or is borderline)."""
    if rows.empty:
        return Step(name, rows, "not measured", "no run of this kind in the results"), None, False
    checks = _checks(rows, floor, constraints)
    chosen, borderline = _meeting(rows, checks)
    if len(chosen):
        ranked = best_first(chosen, cost)
        best = ranked.iloc[0]
        label = "are borderline on" if borderline else "meet"
        targets = (
            f" and {', '.join(c.label() for c in constraints)}"
            if constraints
            else "; no performance target was given, so 'meets the target?' had nothing to check"
        )
        why = f"{len(chosen)} of {len(rows)} runs {label} {quality_note}{targets}"
        runners_up = f"; then {_describe(ranked.iloc[1:4])}" if len(ranked) > 1 else ""
        more = f" and {len(ranked) - 4} more" if len(ranked) > 4 else ""
        reason = f"{why}; cheapest by {cost}: {_describe(best.to_frame().T)}{runners_up}{more}"
        return Step(name, rows, "chosen", reason), best, borderline
    quality_ok = checks["quality"] != FAIL
    best_loss = floor.format_loss(rows["quality_loss"].min())
    misses = [] if quality_ok.any() else [f"{quality_note} missed: best loss {best_loss}"]
    pool = quality_ok if quality_ok.any() else pd.Series(True, index=rows.index)
    misses += [c.shortfall(rows[pool]) for c in constraints if (checks.loc[pool, c.label()] == FAIL).all()]
    return Step(name, rows, "fails", "; ".join(misses) or "no run clears every constraint at once"), None, False


@dataclass(frozen=True)
class Position:
    """A run's quality loss and cost, each with its 95% interval: what dominance is judged on."""

    row: pd.Series
    loss: tuple[float, float, float]  # low, value, high
    cost: tuple[float, float, float]

    @classmethod
    def of(cls, row: pd.Series, floor: QualityFloor, cost: str) -> Position:
        loss_low, loss_high = floor.interval(row)
        return cls(row, (loss_low, row["quality_loss"], loss_high), cost_interval(row, cost))

    def no_worse(self, other: Position) -> bool:
        """At most ``other``'s quality loss and cost, on the point estimates."""
        return self.loss[1] <= other.loss[1] and self.cost[1] <= other.cost[1]

    def beats(self, other: Position) -> bool:
        """No worse on either, and better beyond noise (disjoint 95% intervals) on at least one."""
        return self.no_worse(other) and (self.loss[2] < other.loss[0] or self.cost[2] < other.cost[0])

    def describe(self, floor: QualityFloor) -> str:
        r = self.row
        low, high = Constraint("decode_tokens_per_s", 0.0, True).interval(r)
        loss = ", ".join(floor.format_loss(v) for v in (self.loss[0], self.loss[2]))
        return (
            f"{r['configuration']}/t{r['threads']}/b{r['batch_size']}: {r['decode_tokens_per_s']:.1f} decode tok/s "
            f"[{low:.1f}, {high:.1f}], {floor.metric} loss {floor.format_loss(r['quality_loss'])} [{loss}]"
        )


def _dominance_check(
    pick: pd.Series, pool: pd.DataFrame, floor: QualityFloor, cost: str, picked_at: int
) -> tuple[Step, pd.Series]:
    """The tree's pick, unless a run of ``pool`` (meeting everything the pick meets) beats it; then the
    cheapest such run, checked again until nothing beats the answer."""
    original = current = Position.of(pick, floor, cost)
    candidates = [Position.of(row, floor, cost) for _, row in best_first(pool, cost).iterrows()]
    for _ in range(len(candidates)):
        better = next((c for c in candidates if c.beats(current)), None)
        if better is None:
            break
        current = better
    if current.row.name != pick.name:
        reason = (
            f"step {picked_at}'s pick {original.describe(floor)} is beaten beyond measurement noise by "
            f"{current.describe(floor)}, which meets the floor and every target; recommending it instead"
        )
        return Step("dominance check", pd.DataFrame([pick, current.row]), "overrides", reason), current.row
    close = [c for c in candidates if c.row.name != pick.name and c.no_worse(original)]
    reason = "no run meeting the floor and every target beats it on quality and cost"
    if close:
        reason += f"; {close[0].describe(floor)} is ahead only within measurement noise (kept)"
    return Step("dominance check", pick.to_frame().T, "kept", reason), pick


def _single_group(df: pd.DataFrame, model: str | None, machine: str | None, token_set: str | None) -> pd.DataFrame:
    for column, value in (("model", model), ("env.machine_id", machine), ("token_set", token_set)):
        if value is not None:
            df = df[df[column] == value]
    groups = df[GROUP_COLUMNS].drop_duplicates()
    if len(groups) > 1:
        listed = ", ".join(f"{m}@{h} ({t})" for m, h, t in groups.itertuples(index=False))
        raise EvalbenchError(
            f"results hold several models, machines or token sets ({listed}); pass model=, machine= and token_set= "
            "(speeds are never compared across machines, nor quality across token sets)"
        )
    return df


def _failed_runs(table: pd.DataFrame) -> Step | None:
    failed = table[table["status"] != "ok"]
    if failed.empty:
        return None
    reasons = "; ".join(f"{r.configuration}/t{r.threads}/b{r.batch_size}: {r.error}" for r in failed.itertuples())
    return Step("input", failed, "ignored", f"{len(failed)} failed run(s) left out: {reasons}")


def _constraints(
    min_decode_tokens_per_s: float | None, max_memory_bytes: float | None, max_ttft_s: float | None
) -> list[Constraint]:
    return [
        Constraint(column, target, higher)
        for column, target, higher in (
            ("decode_tokens_per_s", min_decode_tokens_per_s, True),
            ("peak_rss_bytes", max_memory_bytes, False),
            ("ttft_s", max_ttft_s, False),
        )
        if target is not None
    ]


def recommend(
    df: pd.DataFrame,
    max_quality_loss: float = 0.05,
    min_decode_tokens_per_s: float | None = None,
    max_memory_bytes: float | None = None,
    max_ttft_s: float | None = None,
    quality: str = "perplexity",
    cost: str = "s_per_token",
    model: str | None = None,
    machine: str | None = None,
    token_set: str | None = None,
) -> Recommendation:
    """Follow the decision tree over one model's runs on one machine and token set, and recommend a configuration."""
    if max_quality_loss is None or max_quality_loss < 0 or math.isnan(max_quality_loss):
        raise EvalbenchError(f"max_quality_loss={max_quality_loss} is invalid; valid: a number >= 0 (0 = no loss)")
    if df.empty:
        raise EvalbenchError("the results table is empty: run a sweep first")
    table = _single_group(with_objectives(df), model, machine, token_set)
    check_columns(table, [quality, cost])
    trace = [step for step in [_failed_runs(table)] if step is not None]
    runs = table[table["status"] == "ok"].copy()
    if runs.empty:
        verdict = f"nothing to recommend: all {len(table)} runs failed"
        return Recommendation(None, verdict, [*trace, Step("verdict", table, "nothing to recommend", verdict)])

    base_name = baseline_configuration(runs)
    base_rows = runs[runs["configuration"] == base_name]
    floor = QualityFloor(quality, float(base_rows[quality].mean()), max_quality_loss)
    runs["quality_loss"] = floor.losses(runs)
    runs["identical_to_baseline"] = identical_to_baseline(runs, base_rows)
    references = reference_configurations(runs)
    missing = ", ".join(sorted(references)) or "the quality reference"
    note = "" if base_name in references else f"; {missing} was not measured, the least compressed stands in"
    trace.append(
        Step("baseline", base_rows, base_name, f"{base_name} is the baseline ({quality} {floor.baseline:.4g}){note}")
    )
    constraints = _constraints(min_decode_tokens_per_s, max_memory_bytes, max_ttft_s)
    frontier = pareto_front(table, quality="ppl_ratio" if quality == "perplexity" else quality, cost=cost)
    tree = _Tree(floor, constraints, cost, trace, frontier)
    if max_quality_loss == 0:
        return tree.no_loss(runs)
    return tree.loss_allowed(runs)


def identical_to_baseline(runs: pd.DataFrame, base_rows: pd.DataFrame) -> pd.Series:
    """Runs whose logits match the quality reference exactly (mean KLD 0, or the same top token at every scored
    position), where the baseline is that reference (its own KLD is 0)."""
    none = pd.Series(False, index=runs.index)
    if "kld_mean" not in runs or not (base_rows["kld_mean"] == 0).all():
        return none
    same_top = runs["same_top_rate"] >= 100 if "same_top_rate" in runs else none
    return (runs["kld_mean"] == 0) | same_top


@dataclass
class _Tree:
    """The decision tree's walk over one group's successful runs, appending each step to ``trace``."""

    floor: QualityFloor
    constraints: list[Constraint]
    cost: str
    trace: list[Step]
    frontier: pd.DataFrame

    def evaluate(self, name: str, rows: pd.DataFrame, quality_note: str) -> tuple[pd.Series | None, bool]:
        step, best, borderline = _evaluate(name, rows, self.floor, self.constraints, self.cost, quality_note)
        self.trace.append(step)
        return best, borderline

    def answer(self, best: pd.Series, borderline: bool, allowed: pd.DataFrame) -> Recommendation:
        """The tree's pick after the dominance check, against runs meeting at least what the pick meets."""
        checks = _checks(allowed, self.floor, self.constraints)
        meets = ~(checks == FAIL).any(axis=1) if borderline else (checks == PASS).all(axis=1)
        step, best = _dominance_check(best, allowed[meets], self.floor, self.cost, picked_at=len(self.trace))
        self.trace.append(step)
        borderline = bool((checks.loc[best.name] != PASS).any())  # the pick, or a run beating it, is in allowed
        return Recommendation(best, "recommend", self.trace, self.frontier, borderline, self.floor)

    def no_loss(self, runs: pd.DataFrame) -> Recommendation:
        """Floor 0: the cheapest lossless precision indistinguishable from the baseline, on any runtime."""
        lossless = runs[(runs["weight_bits"] >= 16) & ~lossy_levers(runs)]
        note = "no quality loss (indistinguishable from the baseline within measurement)"
        best, borderline = self.evaluate("no loss allowed: lossless precisions", lossless, note)
        if best is not None:
            return self.answer(best, borderline, lossless)
        reason = self.trace[-1].reason
        verdict = f"lossless precisions miss the target ({reason}); the answer is distillation to a smaller model"
        self.trace.append(Step("verdict", lossless, "distillation", verdict))
        return Recommendation(None, "distillation: " + reason, self.trace, self.frontier, floor=self.floor)

    def loss_allowed(self, runs: pd.DataFrame) -> Recommendation:
        """INT8, then fewer bits or pruning, then 16/32 bits: in that order with a target; all, for the cheapest,
        without one."""
        prunings = pruned(runs)
        int8 = (runs["weight_bits"] == 8) & ~prunings
        fewer = (runs["weight_bits"] < 8) | prunings
        kinds = {"int8": runs[int8], "fewer": runs[fewer], "wide": runs[~int8 & ~fewer]}
        if self.constraints:
            return self._in_order(kinds, int(prunings.sum()), runs)
        return self._cheapest(kinds, int(prunings.sum()), runs)

    def _in_order(self, kinds: dict[str, pd.DataFrame], n_pruned: int, runs: pd.DataFrame) -> Recommendation:
        note = self.floor.describe()
        best, borderline = self.evaluate("loss allowed: try INT8 (8-bit weights)", kinds["int8"], note)
        if best is None:
            fewer = f"INT8 fails: fewer bits (INT4 and below) or pruning ({n_pruned} pruned runs measured)"
            best, borderline = self.evaluate(fewer, kinds["fewer"], note)
        if best is None:
            wide = "INT8 and fewer bits lose too much or miss a target: keep 16/32-bit"
            best, borderline = self.evaluate(wide, kinds["wide"], note)
        if best is None:
            return self._nothing_meets(runs, n_pruned)
        return self.answer(best, borderline, runs)

    def _cheapest(self, kinds: dict[str, pd.DataFrame], n_pruned: int, runs: pd.DataFrame) -> Recommendation:
        note = self.floor.describe()
        names = {
            "int8": "loss allowed: try INT8 (8-bit weights)",
            "fewer": "no target to meet, so go on: fewer bits (INT4 and below) or pruning "
            f"({n_pruned} pruned runs measured)",
            "wide": "and 16/32-bit runs (some runtimes decode them faster than INT8)",
        }
        picks = []  # each step's pick: (row, borderline, step number)
        for kind, rows in kinds.items():
            best, borderline = self.evaluate(names[kind], rows, note)
            if best is not None:
                picks.append((best, borderline, len(self.trace)))
        if not picks:
            return self._nothing_meets(runs, n_pruned)
        clear = [pick for pick in picks if not pick[1]] or picks  # a clear pass beats a borderline one
        table = pd.DataFrame([row for row, _, _ in clear])
        ranked = best_first(table.reset_index(drop=True), self.cost).index  # positions in ``clear``, cheapest first
        best, borderline, step_number = clear[ranked[0]]
        order = table.iloc[ranked]
        reason = (
            f"{_describe(best.to_frame().T)}, step {step_number}'s pick, is the cheapest run meeting the floor "
            f"({self.floor.describe()}) by {self.cost}, whatever its bits"
        )
        self.trace.append(Step("no performance target: the cheapest run meeting the floor", order, "chosen", reason))
        return self.answer(best, borderline, runs)

    def _nothing_meets(self, runs: pd.DataFrame, n_pruned: int) -> Recommendation:
        failing = " | ".join(s.reason for s in self.trace if s.outcome == "fails")
        levers = "; ".join(NEXT_LEVERS[1:] if n_pruned else NEXT_LEVERS)
        self.trace.append(Step("verdict", runs, "nothing meets", f"{failing}. Next levers: {levers}"))
        return Recommendation(None, f"nothing meets: {failing}", self.trace, self.frontier, floor=self.floor)
