"""Sliding-window perplexity: every token scored once, exact against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from evalbench.backends.torch.backend import model_log_probs
from evalbench.errors import EvalbenchError
from evalbench.metrics.perplexity import perplexity, scored_text, token_nlls, tokenize, window_spans


@given(n=st.integers(2, 3000), context=st.integers(2, 600), data=st.data())
def test_windows_score_each_token_once_with_context(n, context, data):
    stride = data.draw(st.integers(1, context))
    scored = []
    for begin, end, first in window_spans(n, context, stride):
        assert end - begin <= context
        assert begin < first <= end  # at least one token of context before each scored token
        scored.extend(range(first, end))
    # Overlapping windows score every token but the first; disjoint ones skip each window's first.
    assert scored == [t for t in range(1, n) if stride < context or t % context]


def test_stride_must_fit_context():
    with pytest.raises(EvalbenchError, match=r"perplexity.stride=300 must be in 1..perplexity.context \(256\)"):
        window_spans(1000, 256, 300)


def test_single_window_equals_direct_loss(tiny_model, tiny_tokenizer, wikitext):
    scored = scored_text(tokenize(wikitext[:5000], tiny_tokenizer), 200)
    nlls = token_nlls(model_log_probs(tiny_model), scored, context=512, stride=512)
    with torch.inference_mode():
        loss = tiny_model(input_ids=scored.input_ids[None], labels=scored.input_ids[None]).loss
    assert nlls.numel() == 199
    assert math.isclose(float(nlls.mean()), float(loss), rel_tol=1e-5)


def test_overlapping_windows_give_more_context(tiny_model, tiny_tokenizer, wikitext):
    scored = scored_text(tokenize(wikitext[:20000], tiny_tokenizer), 400)
    wide = token_nlls(model_log_probs(tiny_model), scored, context=400, stride=400)
    narrow = token_nlls(model_log_probs(tiny_model), scored, context=64, stride=32)
    assert narrow.numel() == 399 and wide.numel() == 399
    # The first window is scored identically whatever the stride.
    assert torch.allclose(narrow[:63], wide[:63], atol=1e-4)


def test_companion_metrics_follow_lm_eval_definitions(tiny_model, tiny_tokenizer, wikitext):
    scored = scored_text(tokenize(wikitext, tiny_tokenizer), 300)
    result = perplexity(model_log_probs(tiny_model), scored, context=128, stride=64)
    assert result.eval_tokens == 299
    assert math.isclose(result.perplexity, math.exp(result.nll_sum / 299))
    assert math.isclose(result.bits_per_byte * math.log(2) * result.eval_bytes, result.nll_sum)
    assert math.isclose(math.log(result.word_perplexity) * result.eval_words, result.nll_sum)
    assert result.eval_bytes == len(scored.text.encode()) and scored.text in wikitext
    # A random-weight model is near uniform over its vocabulary.
    assert 0.5 * len(tiny_tokenizer) < result.perplexity < 2 * len(tiny_tokenizer)


def test_max_tokens_fixes_the_scored_tokens(tiny_tokenizer, wikitext):
    corpus = tokenize(wikitext, tiny_tokenizer)
    first, again, other = scored_text(corpus, 1000), scored_text(corpus, 1000), scored_text(corpus, 999)
    assert first.token_hash == again.token_hash != other.token_hash
    assert scored_text(corpus, 0).input_ids.numel() == len(corpus.ids) == scored_text(corpus, None).input_ids.numel()
    with pytest.raises(EvalbenchError, match="at least 2 tokens"):
        scored_text(tokenize("a", tiny_tokenizer), 5)
