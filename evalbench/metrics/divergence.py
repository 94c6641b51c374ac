"""How far a model's next-token distributions are from a reference's, token by token (llama.cpp's KLD method).

The reference keeps, for each scored token, its ``top_k`` most likely next tokens with their
log-probabilities, the log of the probability of everything else (the tail mass P_T),
``tail_samples`` tokens drawn from the tail in proportion to their probability, and the
log-probability of the token that came next. Against it, a model's full distribution gives:

* KL(reference || model), split exactly as
  ``sum_top p log(p/q) + P_T log(P_T/Q_T) + P_T KL(p_tail || q_tail)``, where the tails are
  normalised. The first two terms are exact; the last, never negative, is estimated from the
  tail samples with the unbiased, non-negative estimator ``mean(rho - 1 - log rho)``,
  ``rho = q_tail(j) / p_tail(j)``. With ``tail_samples=0`` it is left out and the result is a
  lower bound (log-sum inequality). Over the whole vocabulary it is exact.
  ``benchmarks/kld_topk_error.py`` measures the error on the sample model;
* whether both put the same token first (exact);
* the change in probability of the correct token and the log-ratio of its likelihood (exact).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from evalbench.metrics.chunked import row_chunks, rows_per_chunk


def _tail(
    log_probs: torch.Tensor, top_ids: torch.Tensor, samples: int = 0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: log of the mass outside ``top_ids`` (exact, in log space) and ``samples`` tokens drawn from it.

    A chunk of rows at a time (:func:`~evalbench.metrics.chunked.rows_per_chunk`): the float64
    copy it masks, and the temporary ``logsumexp`` makes, are the chunk's scratch.
    """
    masses, drawn = [], []
    for rows in row_chunks(log_probs.shape[0], rows_per_chunk(log_probs.shape[-1])):
        masked = log_probs[rows].to(torch.float64, copy=True).scatter_(1, top_ids[rows].long(), float("-inf"))
        mass = torch.logsumexp(masked, dim=-1)
        masses.append(mass)
        if samples:
            probs = masked.sub_(mass[:, None]).exp_()
            probs[~torch.isfinite(mass)] = 1.0  # no tail: any draw, weighted by P_T = 0 later
            drawn.append(torch.multinomial(probs, samples, replacement=True, generator=generator).to(torch.int32))
    n = log_probs.shape[0]
    mass = torch.cat(masses) if masses else torch.empty(0, dtype=torch.float64)
    ids = torch.cat(drawn) if drawn else torch.empty(n, 0, dtype=torch.int32)
    return mass, ids


@dataclass(frozen=True)
class Reference:
    """What a reference model said about each scored token, enough to compare others against it."""

    top_ids: torch.Tensor  # [n, k] int32, most likely first: column 0 is the reference's top token
    top_log_probs: torch.Tensor  # [n, k] float32
    tail_log_mass: torch.Tensor  # [n] float64, log of the mass outside the top k (-inf when k = vocab)
    tail_ids: torch.Tensor  # [n, m] int32, tokens drawn from the tail in proportion to their probability
    tail_log_probs: torch.Tensor  # [n, m] float32, their log-probabilities
    target_log_probs: torch.Tensor  # [n] float64, log-probability of the token that came next

    @classmethod
    def from_log_probs(
        cls,
        log_probs: torch.Tensor,
        targets: torch.Tensor,
        top_k: int,
        tail_samples: int = 0,
        generator: torch.Generator | None = None,
    ) -> Reference:
        """Summarise full log-probabilities ``[n, vocab]`` for the tokens ``targets`` ``[n]``."""
        vocab = log_probs.shape[-1]
        top = log_probs.topk(min(top_k, vocab), dim=-1)
        top_ids = top.indices.to(torch.int32)
        tail_log_mass, tail_ids = _tail(log_probs, top_ids, tail_samples if top_k < vocab else 0, generator)
        return cls(
            top_ids=top_ids,
            top_log_probs=top.values.float(),
            tail_log_mass=tail_log_mass,
            tail_ids=tail_ids,
            tail_log_probs=log_probs.gather(1, tail_ids.long()).float(),
            target_log_probs=log_probs.gather(1, targets[:, None].long())[:, 0].double(),
        )

    @classmethod
    def concat(cls, pieces: list[Reference]) -> Reference:
        return cls(*(torch.cat([getattr(p, name) for p in pieces]) for name in cls.__dataclass_fields__))

    def rows(self, start: int, stop: int) -> Reference:
        return Reference(*(getattr(self, name)[start:stop] for name in self.__dataclass_fields__))

    @property
    def tokens(self) -> int:
        return self.target_log_probs.numel()

    @property
    def top_k(self) -> int:
        return self.top_ids.shape[1]

    @property
    def tail_samples(self) -> int:
        return self.tail_ids.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.__dataclass_fields__)

    def save(self, path: str | Path) -> None:
        save_file({name: getattr(self, name).contiguous() for name in self.__dataclass_fields__}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        return cls(**load_file(str(path)))


@dataclass(frozen=True)
class TokenComparison:
    """Per-token comparison of a model with the reference."""

    kld: torch.Tensor  # [n] float64, KL(reference || model); the tail's share estimated from samples
    same_top: torch.Tensor  # [n] bool
    delta_p: torch.Tensor  # [n] float64, p_model(correct) - p_reference(correct)
    log_ratio: torch.Tensor  # [n] float64, nll_model - nll_reference of the correct token

    @classmethod
    def concat(cls, pieces: list[TokenComparison]) -> TokenComparison:
        return cls(*(torch.cat([getattr(p, name) for p in pieces]) for name in cls.__dataclass_fields__))


def compare(log_probs: torch.Tensor, targets: torch.Tensor, reference: Reference) -> TokenComparison:
    """Compare a model's log-probabilities ``[n, vocab]`` for the next tokens ``targets`` with ``reference`` rows."""
    if reference.tokens != log_probs.shape[0]:
        raise ValueError(f"reference has {reference.tokens} tokens, the model scored {log_probs.shape[0]}")
    model_top = log_probs.gather(1, reference.top_ids.long()).double()
    ref_top = reference.top_log_probs.double()
    kld_top = (ref_top.exp() * (ref_top - model_top)).sum(dim=-1)
    ref_tail = reference.tail_log_mass
    model_tail, _ = _tail(log_probs, reference.top_ids)
    kld_tail = ref_tail.exp() * (ref_tail - model_tail)
    if reference.tail_samples:
        # P_T * KL(p_tail || q_tail), estimated as mean(rho - 1 - log rho) over tokens drawn from p_tail
        log_rho = (log_probs.gather(1, reference.tail_ids.long()).double() - model_tail[:, None]) - (
            reference.tail_log_probs.double() - ref_tail[:, None]
        )
        kld_tail = kld_tail + ref_tail.exp() * (log_rho.exp() - 1 - log_rho).mean(dim=-1)
    kld_tail = torch.where(torch.isinf(ref_tail), 0.0, kld_tail)
    model_target = log_probs.gather(1, targets[:, None].long())[:, 0].double()
    return TokenComparison(
        kld=(kld_top + kld_tail).clamp_min(0.0),  # rounding can leave -1e-9 where the two agree
        # the reference's top token is also the model's (ties count: bf16 logits often tie)
        same_top=model_top[:, 0] >= log_probs.max(dim=-1).values.double(),
        delta_p=model_target.exp() - reference.target_log_probs.exp(),
        log_ratio=reference.target_log_probs - model_target,
    )


def exact_kld(reference_log_probs: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) per row over the whole vocabulary: what the top-k form approximates."""
    kld = torch.empty(log_probs.shape[0], dtype=torch.float64)
    for rows in row_chunks(log_probs.shape[0], rows_per_chunk(log_probs.shape[-1])):
        ref = reference_log_probs[rows].double()
        kld[rows] = (ref.exp() * (ref - log_probs[rows].double())).sum(dim=-1)
    return kld


@dataclass(frozen=True)
class DivergenceResult:
    """The record's distribution columns; probabilities and rates in percent, as llama.cpp prints them."""

    kld_mean: float
    kld_mean_stderr: float
    kld_median: float
    kld_p99: float
    kld_max: float
    same_top_rate: float  # % of tokens where model and reference put the same token first
    delta_p_mean: float  # percentage points, mean of p_model(correct) - p_reference(correct)
    delta_p_rms: float  # percentage points
    ppl_ratio: float  # perplexity(model) / perplexity(reference) over the same tokens
    ppl_ratio_ci_low: float  # 95% interval from the per-token log-ratio
    ppl_ratio_ci_high: float
    kld_tokens: int

    def to_record(self) -> dict[str, object]:
        return asdict(self)


def summarize(comparison: TokenComparison) -> DivergenceResult:
    """Aggregate per-token comparisons into the record's columns."""
    kld = comparison.kld.numpy()
    n = kld.size
    log_ratio = comparison.log_ratio.numpy()
    mean_log_ratio = float(log_ratio.mean())
    half = 1.96 * float(log_ratio.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    delta_p = comparison.delta_p.numpy() * 100
    return DivergenceResult(
        kld_mean=float(kld.mean()),
        kld_mean_stderr=float(kld.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        kld_median=float(np.median(kld)),
        kld_p99=float(np.percentile(kld, 99)),
        kld_max=float(kld.max()),
        same_top_rate=float(comparison.same_top.double().mean()) * 100,
        delta_p_mean=float(delta_p.mean()),
        delta_p_rms=float(np.sqrt((delta_p**2).mean())),
        ppl_ratio=math.exp(mean_log_ratio),
        ppl_ratio_ci_low=math.exp(mean_log_ratio - half),
        ppl_ratio_ci_high=math.exp(mean_log_ratio + half),
        kld_tokens=n,
    )
