"""Sliding-window perplexity, with lm-evaluation-harness's tokenizer-independent companions.

The corpus is tokenized once and cut to its first ``max_tokens`` tokens, so every
precision scores exactly the same tokens. Windows of ``context`` tokens advance by
``stride``; each window scores only the tokens the previous window did not, with the
tokens before them as context (the method of the Hugging Face perplexity guide).
A token with no context before it in its window (the first token, and every
window's first token when ``stride == context``) is not scored.

``bits_per_byte`` and ``word_perplexity`` follow lm-evaluation-harness: the summed
negative log-likelihood (nats) over the UTF-8 bytes (divided by ln 2) and over the
whitespace-separated words of the text the scored tokens cover.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

from evalbench.errors import EvalbenchError
from evalbench.metrics.chunked import log_softmax_chunks


@dataclass(frozen=True)
class ScoredText:
    """Token ids to score and the text they cover."""

    input_ids: torch.Tensor  # shape [n_tokens], int64
    text: str  # the text from the first scored token to the last

    @property
    def token_hash(self) -> str:
        """A fingerprint of the scored token ids, equal across precisions by construction."""
        return hashlib.sha256(self.input_ids.numpy().tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    bits_per_byte: float
    word_perplexity: float
    nll_sum: float
    eval_tokens: int
    eval_bytes: int
    eval_words: int
    eval_token_hash: str
    windows: int

    def to_record(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Corpus:
    """A text and its tokens (no special tokens), with each token's character span."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]


# Tokens dropped before the end of a partial text: a token near the cut may differ from the whole
# text's (a merge across the cut), one far before it cannot.
_CUT_MARGIN = 64


def _encode(text: str, tokenizer) -> Corpus:
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return Corpus(text, encoding["input_ids"], encoding["offset_mapping"])


def tokenize(text: str, tokenizer, max_tokens: int | None = None) -> Corpus:
    """The tokens of ``text`` (no special tokens) with their character spans.

    With ``max_tokens``, only as many leading lines as give that many tokens are tokenized
    (doubling the slice until they do), and the first ``max_tokens`` tokens are kept: the same
    ids the whole text would give, at a fraction of the cost.
    """
    chars = (max_tokens or 0) * 8
    while max_tokens:
        cut = text.find("\n", chars)
        if cut == -1:
            break
        corpus = _encode(text[: cut + 1], tokenizer)
        if len(corpus.ids) >= max_tokens + _CUT_MARGIN:
            return Corpus(corpus.text, corpus.ids[:max_tokens], corpus.offsets[:max_tokens])
        chars = 2 * cut + 1
    return _encode(text, tokenizer)


def scored_text(corpus: Corpus, max_tokens: int | None) -> ScoredText:
    """The first ``max_tokens`` tokens of ``corpus`` (all of them when 0 or None)."""
    end = min(max_tokens, len(corpus.ids)) if max_tokens else len(corpus.ids)
    if end < 2:
        raise EvalbenchError(f"perplexity needs at least 2 tokens, the text gives {end}")
    span = corpus.text[corpus.offsets[1][0] : corpus.offsets[end - 1][1]]
    return ScoredText(torch.tensor(corpus.ids[:end], dtype=torch.long), span)


def window_spans(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` for each window over ``n_tokens`` tokens."""
    if not 0 < stride <= context:
        raise EvalbenchError(f"perplexity.stride={stride} must be in 1..perplexity.context ({context})")
    spans, scored_up_to = [], 1
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        spans.append((begin, end, max(scored_up_to, begin + 1)))
        scored_up_to = end
        if end == n_tokens:
            break
    return spans


# window [n] -> next-token logits [n, vocab], in the backend's dtype (log-probabilities are logits too)
Logits = Callable[[torch.Tensor], torch.Tensor]


def window_logits(
    logits: Logits, scored: ScoredText, context: int, stride: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per window: the next-token logits ``[m, vocab]`` of its ``m`` scored tokens, and those tokens.

    ``logits`` is a backend's :meth:`~evalbench.backends.base.Backend.logits`.
    """
    for begin, end, first_scored in window_spans(scored.input_ids.numel(), context, stride):
        rows = logits(scored.input_ids[begin:end])
        predicting = slice(first_scored - begin - 1, end - begin - 1)  # row t predicts token t+1
        yield rows[predicting], scored.input_ids[first_scored:end]
        del rows  # not held while the backend computes the next window


def window_log_probs(
    logits: Logits, scored: ScoredText, context: int, stride: int, budget: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per chunk of a window's scored tokens (:mod:`~evalbench.metrics.chunked`, within ``budget`` bytes):
    their next-token log-probabilities ``[c, vocab]`` (float32) and the ``c`` tokens."""
    for rows, targets in window_logits(logits, scored, context, stride):
        for part, log_probs in log_softmax_chunks(rows, budget):
            yield log_probs, targets[part]
        del rows  # not held while the backend computes the next window


def target_nlls(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats, float64) of each target under its row of ``log_probs``."""
    return -log_probs.gather(1, targets[:, None])[:, 0].double()


def token_nlls(logits: Logits, scored: ScoredText, context: int, stride: int) -> torch.Tensor:
    """Negative log-likelihood (nats, float64) of every scored token, in order."""
    windows = window_log_probs(logits, scored, context, stride)
    return torch.cat([target_nlls(rows, targets) for rows, targets in windows])


def perplexity(logits: Logits, scored: ScoredText, context: int, stride: int) -> PerplexityResult:
    """Score ``scored`` and return token perplexity, bits per byte and word perplexity."""
    return summarize(token_nlls(logits, scored, context, stride), scored, context, stride)


def summarize(nlls: torch.Tensor, scored: ScoredText, context: int, stride: int) -> PerplexityResult:
    """Token perplexity, bits per byte and word perplexity from the scored tokens' NLLs."""
    nll_sum = float(nlls.sum())
    n_bytes = len(scored.text.encode("utf-8"))
    n_words = len(re.split(r"\s+", scored.text.strip()))
    return PerplexityResult(
        perplexity=math.exp(nll_sum / nlls.numel()),
        bits_per_byte=nll_sum / n_bytes / math.log(2),
        word_perplexity=math.exp(nll_sum / n_words),
        nll_sum=nll_sum,
        eval_tokens=int(nlls.numel()),
        eval_bytes=n_bytes,
        eval_words=n_words,
        eval_token_hash=scored.token_hash,
        windows=len(window_spans(scored.input_ids.numel(), context, stride)),
    )
