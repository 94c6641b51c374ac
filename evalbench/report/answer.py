"""The answer of one group of runs, in words and numbers: what the report, report.md, the notebook and the
console all show first (the same facts from the same code)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from html import escape

import pandas as pd

from evalbench.analysis.recommend import Recommendation
from evalbench.config import Targets
from evalbench.report import units

# Overrides that only say where files go: left out of the reproducing command.
_PLACES = ("results_dir=", "hydra.", "force=")


@dataclass(frozen=True)
class Answer:
    """What to deploy (or why nothing), its figures, the floor and targets, and how it was chosen."""

    title: str
    headline: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    command: str = ""
    trace: list[str] = field(default_factory=list)
    recommended: bool = False

    def to_text(self, with_trace: bool = True) -> str:
        """Plain text for the console and report.md: the headline, the facts aligned, the numbered trace."""
        width = max((len(label) for label, _ in self.facts), default=0)
        lines = [self.title, self.headline]
        lines += [f"  {label.ljust(width)}  {value}" for label, value in self.facts]
        if self.command:
            lines.append(f"  {'reproduce'.ljust(width)}  {self.command}")
        if with_trace and self.trace:
            lines += ["How it was chosen:"] + [f"  {n}. {step}" for n, step in enumerate(self.trace, 1)]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        facts = [f"- **{label}**: {value}" for label, value in self.facts]
        command = [f"- **reproduce**: `{self.command}`"] if self.command else []
        steps = [f"{n}. {step}" for n, step in enumerate(self.trace, 1)]
        return "\n".join([f"**{self.headline}**", "", *facts, *command, "", "How it was chosen:", "", *steps])

    def to_html(self) -> str:
        kind = "answer" if self.recommended else "answer none"
        facts = "".join(f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>" for label, value in self.facts)
        if self.command:
            facts += f"<dt>reproduce</dt><dd><code>{escape(self.command)}</code></dd>"
        steps = "".join(f"<li>{escape(step)}</li>" for step in self.trace)
        return (
            f'<section class="{kind}"><p class="headline">{escape(self.headline)}</p><dl>{facts}</dl>'
            f"<details><summary>How it was chosen ({len(self.trace)} steps)</summary><ol>{steps}</ol></details>"
            "</section>"
        )


def answer_of(title: str, rec: Recommendation, targets: Targets) -> Answer:
    """The answer card of ``rec``: the configuration in words with its speed, quality loss and memory."""
    trace = [f"{step.name}: {step.outcome}. {step.reason}" for step in rec.trace]
    if rec.config is None:
        return Answer(title, f"No configuration recommended: {rec.verdict}", _floor_facts(rec, targets), "", trace)
    row = rec.config
    prompt = units.count(row.get("prompt_tokens"))
    verdict = "Recommended (borderline: an interval straddles a target)" if rec.borderline else "Recommended"
    facts = [
        ("decode speed", units.rate(row, "decode_tokens_per_s")),
        ("quality loss", quality_loss_text(rec, row)),
        ("peak memory", f"{units.size(row.get('peak_rss_bytes'))} resident, of which weights "
                        f"{units.size(row.get('weight_bytes'))}"),
        ("first token", f"{units.seconds(row.get('ttft_s'))} after {prompt} prompt tokens"),
        *_floor_facts(rec, targets),
    ]  # fmt: skip
    return Answer(title, f"{verdict}: {units.configuration_words(row)}", facts, command_of(row), trace, True)


def quality_loss_text(rec: Recommendation, row: pd.Series) -> str:
    """``perplexity +0.35% (95%: -0.20% to +0.90%) against torch fp32``, and whether it is indistinguishable."""
    same = ", indistinguishable from it" if rec.floor.lossless(row) else ""
    return f"{rec.floor.metric} {units.loss(rec.floor, row, '95%: ')} against {baseline_name(rec)}{same}"


def baseline_name(rec: Recommendation) -> str:
    """The configuration the floor is read against (``torch fp32``)."""
    baseline = next((step for step in rec.trace if step.name == "baseline"), None)
    return baseline.outcome if baseline is not None else "the baseline"


def _floor_facts(rec: Recommendation, targets: Targets) -> list[tuple[str, str]]:
    floor = rec.floor.describe() if rec.floor is not None else f"{targets.quality} loss <= {targets.max_quality_loss:g}"
    return [("floor", floor), ("targets", targets_text(targets))]


def targets_text(targets: Targets) -> str:
    """The performance targets in words, or that there are none."""
    parts = []
    if targets.min_decode_tokens_per_s is not None:
        parts.append(f"decode >= {targets.min_decode_tokens_per_s:g} tok/s")
    if targets.max_memory_bytes is not None:
        parts.append(f"peak memory <= {units.size(targets.max_memory_bytes)}")
    if targets.max_ttft_s is not None:
        parts.append(f"first token <= {units.seconds(targets.max_ttft_s)}")
    return ", ".join(parts) or "none (the cheapest run meeting the floor)"


def command_of(row: pd.Series) -> str:
    """The command line that measures ``row``'s configuration again: the run's own overrides when recorded
    (minus where its files went), else its model, precision, levers, threads and batch size."""
    overrides = row.get("overrides")
    if isinstance(overrides, list) and overrides:
        kept = [o for o in overrides if not o.startswith(_PLACES)]
        return "evalbench " + " ".join(shlex.quote(o) for o in kept)
    path = row.get("config.model.path")
    parts = [f"model=hub model.path={path}"] if units.known(path) else [f"model={row['model']}"]
    parts += [f"precision={row['precision']}", f"threads={row['threads']}", f"batch_size={row['batch_size']}"]
    return "evalbench " + " ".join(parts)
