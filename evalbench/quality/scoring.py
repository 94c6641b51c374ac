"""One pass over the scored tokens gives perplexity and, against the stored reference, the distribution metrics.

Both are computed through the backend on the converted model, once per model, backend,
precision and token set (reused across threads and batch sizes unless
``perplexity.reuse=false``). The reference distributions come from the reference configuration
(:mod:`evalbench.configuration`: ``quality.reference``, any backend's precision), whatever backend a
run measures: built in the same pass when this run is that configuration, else by loading it
before this run loads its own model, and stored so that no other run computes them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from evalbench.backends.base import Backend
from evalbench.configuration import Configuration
from evalbench.metrics.chunked import log_softmax_chunks
from evalbench.metrics.divergence import Reference, TokenComparison, compare, summarize
from evalbench.metrics.perplexity import (
    Corpus,
    Logits,
    ScoredText,
    scored_text,
    target_nlls,
    window_logits,
    window_spans,
)
from evalbench.metrics.perplexity import summarize as summarize_perplexity
from evalbench.progress import Progress, logged_step
from evalbench.quality import cache
from evalbench.quality.reference import ReferenceStore

log = logging.getLogger(__name__)


@dataclass
class ScoringPlan:
    """What this run scores, where its cached result and reference live."""

    scored: ScoredText
    context: int
    stride: int
    cache_key: str
    reuse: bool
    store: ReferenceStore | None  # None: no distribution metrics
    reference: Configuration | None
    same_as_reference: bool  # this run is the reference configuration: it builds the reference itself
    top_k: int
    tail_samples: int
    budget: int | None = None  # bytes of a chunk's scratch (None: chunked.BUDGET_BYTES)


def plan(
    cfg: DictConfig,
    results_dir: Path,
    corpus: Corpus,
    location: str,
    configuration: dict[str, Any],
    reference: Configuration | None,
) -> ScoringPlan:
    """``configuration``: this run's description (:meth:`Configuration.describe`); ``reference``: the reference
    configuration (None: no distribution metrics)."""
    ppl_cfg, quality = cfg.perplexity, cfg.quality
    stride = ppl_cfg.stride or ppl_cfg.context
    scored = scored_text(corpus, ppl_cfg.max_tokens)
    common = {
        "model": location,
        "checkpoint": cache.folder_identity(location),
        "tokens": scored.token_hash,
        "context": ppl_cfg.context,
        "stride": stride,
        "torch": torch.__version__,
    }
    store, same = None, False
    if reference is not None:
        reference_fields = reference.describe()
        key = cache.cache_key(
            {**common, "reference": reference_fields, "top_k": quality.top_k, "tail_samples": quality.tail_samples}
        )
        same = reference_fields == configuration
        store = ReferenceStore.under(results_dir, key)
    # every field of the precision and backend: any of them can change the scores
    key = cache.cache_key({**common, "precision": configuration, "reference": store and store.key})
    return ScoringPlan(
        scored, ppl_cfg.context, stride, key, ppl_cfg.reuse, store, reference, same, quality.top_k, quality.tail_samples
    )


def reuse_cached(plan: ScoringPlan, results_dir: Path, record: dict[str, Any]) -> bool:
    """Fill ``record`` from a result computed earlier for the same model, precision and tokens, if any."""
    entry = cache.load(results_dir, plan.cache_key) if plan.reuse else None
    if entry is None:
        return False
    record.update(entry["perplexity"], perplexity_from_run=entry["computed_by"])
    if plan.store is not None:
        record["reference_computed"] = False
    return True


@dataclass
class _Pass:
    """What one scoring pass gathers, a chunk of positions at a time."""

    plan: ScoringPlan
    reference: Reference | None
    build: bool
    nlls: list[torch.Tensor] = field(default_factory=list)
    comparisons: list[TokenComparison] = field(default_factory=list)
    built: list[Reference] = field(default_factory=list)
    offset: int = 0
    # the tail samples: the same reference from the same model
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))

    def add(self, log_probs: torch.Tensor, targets: torch.Tensor) -> None:
        """Score the next ``targets`` under their float32 ``log_probs`` ``[c, vocab]``."""
        self.nlls.append(target_nlls(log_probs, targets))
        rows = None
        if self.build:
            plan = self.plan
            rows = Reference.from_log_probs(log_probs, targets, plan.top_k, plan.tail_samples, self.generator)
            self.built.append(rows)
        elif self.reference is not None:
            rows = self.reference.rows(self.offset, self.offset + targets.numel())
        if rows is not None:
            self.comparisons.append(compare(log_probs, targets, rows))
        self.offset += targets.numel()

    def add_window(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Score a window's ``targets`` under their ``logits`` ``[m, vocab]``, a chunk of positions at a time."""
        for part, log_probs in log_softmax_chunks(logits, self.plan.budget):
            self.add(log_probs, targets[part])


def _score(
    logits: Logits, plan: ScoringPlan, reference: Reference | None, build: bool
) -> tuple[dict[str, Any], Reference | None]:
    """One pass: perplexity, and the distribution metrics against ``reference`` (or the one built on the way).

    Each window's logits become log-probabilities a chunk of positions at a time
    (:mod:`~evalbench.metrics.chunked`); its progress is logged (:class:`~evalbench.progress.Progress`).
    """
    scoring = _Pass(plan, reference, build)
    spans = window_spans(plan.scored.input_ids.numel(), plan.context, plan.stride)
    progress = Progress("scoring window", [end - begin for begin, end, _ in spans], log, unit="tokens")
    for rows, targets in window_logits(logits, plan.scored, plan.context, plan.stride):
        scoring.add_window(rows, targets)
        del rows  # not held while the backend computes the next window
        progress.step()
    progress.finish()
    result = summarize_perplexity(torch.cat(scoring.nlls), plan.scored, plan.context, plan.stride).to_record()
    if scoring.comparisons:
        result.update(summarize(TokenComparison.concat(scoring.comparisons)).to_record())
    return result, Reference.concat(scoring.built) if scoring.built else None


def _build_reference(plan: ScoringPlan, logits: Logits, run_id: str) -> dict[str, Any]:
    """Score at the reference precision and store the reference; its result too."""
    started = time.perf_counter()
    result, reference = _score(logits, plan, None, build=True)
    meta = {
        "computed_by": run_id,
        "configuration": plan.reference.describe(),
        "top_k": plan.top_k,
        "tail_samples": reference.tail_samples,
        "tokens": reference.tokens,
        "bytes": reference.nbytes,
        "seconds": time.perf_counter() - started,
    }
    plan.store.save(reference, meta)
    return result


def _reference_fields(plan: ScoringPlan, meta: dict[str, Any], computed_here: bool) -> dict[str, Any]:
    return {
        "reference_precision": meta["configuration"]["precision"],
        "reference_backend": meta["configuration"]["backend"],
        "reference_key": plan.store.key,
        "reference_from_run": meta["computed_by"],
        "reference_computed": computed_here,
        "reference_bytes": meta["bytes"],
        "kld_top_k": meta["top_k"],
        "kld_tail_samples": meta["tail_samples"],
        "reference_time_s": meta["seconds"],  # the pass that built it, in the run that did
    }


def prepare_reference(plan: ScoringPlan, reference_backend: Callable[[Configuration], Backend], run_id: str) -> bool:
    """Before this run loads its own model: store the reference if it is missing and this run cannot build it.

    ``reference_backend`` makes the reference configuration's backend, loaded only when the
    reference is missing. Returns whether this run computed it.
    """
    if plan.store is None or plan.same_as_reference:
        return False
    with plan.store.lock():
        if plan.store.exists():
            return False
        with logged_step(log, f"building the stored reference with {plan.reference.label}"):
            backend = reference_backend(plan.reference)
            try:
                _build_reference(plan, backend.logits, run_id)
            finally:
                backend.close()
        return True


def score(
    plan: ScoringPlan, logits: Logits, record: dict[str, Any], results_dir: Path, computed_here: bool = False
) -> None:
    """Score through ``logits`` (a backend's) and put perplexity and distribution metrics into ``record``."""
    started = time.perf_counter()
    if plan.store is None:
        result, _ = _score(logits, plan, None, build=False)
    elif plan.same_as_reference:
        with plan.store.lock():
            if plan.store.exists():
                result, _ = _score(logits, plan, plan.store.load(), build=False)
            else:
                result = _build_reference(plan, logits, record["run_id"])
                computed_here = True
    else:
        result, _ = _score(logits, plan, plan.store.load(), build=False)
    if plan.store is not None:
        result.update(_reference_fields(plan, plan.store.meta(), computed_here))
    record.update(result, perplexity_time_s=time.perf_counter() - started, perplexity_from_run=None)
    cache.store(results_dir, plan.cache_key, {"perplexity": result, "computed_by": record["run_id"]})
