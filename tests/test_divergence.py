"""KL divergence, same-top rate and probability change against a stored top-k reference."""

from __future__ import annotations

import math

import pytest
import torch

from evalbench.backends.torch.backend import model_log_probs
from evalbench.metrics.divergence import Reference, TokenComparison, compare, exact_kld, summarize
from evalbench.metrics.perplexity import perplexity, scored_text, tokenize, window_log_probs

CONTEXT = 128


@pytest.fixture(scope="module")
def scored(wikitext, tiny_tokenizer):
    return scored_text(tokenize(wikitext[:20000], tiny_tokenizer), 600)


def _windows(model, scored):
    return list(window_log_probs(model_log_probs(model), scored, CONTEXT, CONTEXT))


def _damaged(model, relative_noise: float, seed: int = 0):
    """``model`` with Gaussian noise of ``relative_noise`` times each weight's std added to every weight."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * param.std() * relative_noise)
    return model


def _compare(reference_windows, model_windows, top_k: int, tail_samples: int = 0) -> TokenComparison:
    generator = torch.Generator().manual_seed(0)
    return TokenComparison.concat(
        [
            compare(new, targets, Reference.from_log_probs(ref, targets, top_k, tail_samples, generator))
            for (ref, targets), (new, _) in zip(reference_windows, model_windows, strict=True)
        ]
    )


def test_model_against_itself_has_zero_divergence(tiny_model, scored):
    windows = _windows(tiny_model, scored)
    result = summarize(_compare(windows, _windows(tiny_model, scored), top_k=16))
    assert result.kld_tokens == scored.input_ids.numel() - math.ceil(scored.input_ids.numel() / CONTEXT)
    assert result.kld_mean < 1e-9 and result.kld_p99 < 1e-9
    assert result.same_top_rate == 100.0
    assert result.delta_p_mean == 0.0 and result.delta_p_rms == 0.0
    assert result.ppl_ratio == pytest.approx(1.0, abs=1e-12)
    assert result.ppl_ratio_ci_low == pytest.approx(1.0, abs=1e-12)


def test_damaged_models_diverge_more_the_more_they_are_damaged(tiny_model_dir, scored):
    from transformers import AutoModelForCausalLM

    def load():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    reference = _windows(load(), scored)
    light = summarize(_compare(reference, _windows(_damaged(load(), 0.05), scored), top_k=16))
    heavy = summarize(_compare(reference, _windows(_damaged(load(), 0.5), scored), top_k=16))
    assert 0 < light.kld_mean < heavy.kld_mean
    assert light.kld_p99 < heavy.kld_p99
    assert 100 > light.same_top_rate > heavy.same_top_rate
    assert 0 < light.delta_p_rms < heavy.delta_p_rms


def test_ppl_ratio_is_the_ratio_of_perplexities_with_an_interval_around_it(tiny_model_dir, tiny_model, scored):
    from transformers import AutoModelForCausalLM

    damaged = _damaged(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(), 0.2)
    result = summarize(_compare(_windows(tiny_model, scored), _windows(damaged, scored), top_k=8))
    expected = (
        perplexity(model_log_probs(damaged), scored, CONTEXT, CONTEXT).perplexity
        / perplexity(model_log_probs(tiny_model), scored, CONTEXT, CONTEXT).perplexity
    )
    assert result.ppl_ratio == pytest.approx(expected, rel=1e-9)
    assert result.ppl_ratio_ci_low < result.ppl_ratio < result.ppl_ratio_ci_high


def test_top_k_kld_is_a_lower_bound_that_tightens_with_k_and_is_exact_over_the_vocabulary(tiny_model_dir, scored):
    from transformers import AutoModelForCausalLM

    def load():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    reference, damaged = _windows(load(), scored), _windows(_damaged(load(), 0.3), scored)
    exact = torch.cat([exact_kld(ref, new) for (ref, _), (new, _) in zip(reference, damaged, strict=True)])
    vocab = reference[0][0].shape[-1]
    previous = torch.zeros_like(exact)
    for k in (1, 4, 32, 128):
        approx = _compare(reference, damaged, top_k=k).kld
        assert (approx <= exact + 1e-9).all(), f"top-{k} KLD exceeds the exact value"
        assert (approx >= previous - 1e-9).all(), f"top-{k} KLD is below top-fewer"
        previous = approx
    assert previous.mean() < exact.mean()
    full = _compare(reference, damaged, top_k=vocab, tail_samples=8).kld  # no tail left to sample
    torch.testing.assert_close(full, exact, rtol=1e-6, atol=1e-9)


def test_tail_samples_remove_the_bias_of_the_top_k_bound(tiny_model_dir, scored):
    from transformers import AutoModelForCausalLM

    def load():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    reference, damaged = _windows(load(), scored), _windows(_damaged(load(), 0.3), scored)
    exact = torch.cat([exact_kld(ref, new) for (ref, _), (new, _) in zip(reference, damaged, strict=True)])
    bound = _compare(reference, damaged, top_k=8).kld
    estimate = _compare(reference, damaged, top_k=8, tail_samples=32).kld
    assert (estimate >= bound - 1e-12).all()  # the tail's estimated share is never negative
    assert bound.mean() < 0.9 * exact.mean()  # a random-weight model spreads its mass: the bound is far off
    assert estimate.mean() == pytest.approx(float(exact.mean()), rel=0.03)
    assert (estimate - exact).abs().mean() < (bound - exact).abs().mean() / 3


def test_reference_round_trips_through_its_file(tiny_model, scored, tmp_path):
    (log_probs, targets), *_ = _windows(tiny_model, scored)
    reference = Reference.from_log_probs(log_probs, targets, top_k=16, tail_samples=4)
    assert reference.nbytes == reference.tokens * ((16 + 4) * (4 + 4) + 8 + 8)
    in_top = reference.tail_ids[:, :, None] == reference.top_ids[:, None, :]
    assert not in_top.any()  # each token's samples come from outside its own top k
    assert torch.equal(reference.top_ids[:, 0].long(), log_probs.argmax(dim=-1))
    reference.save(tmp_path / "ref.safetensors")
    loaded = Reference.load(tmp_path / "ref.safetensors")
    for name in Reference.__dataclass_fields__:
        assert torch.equal(getattr(loaded, name), getattr(reference, name)), name


def test_comparing_against_a_reference_of_other_tokens_is_refused(tiny_model, scored):
    (log_probs, targets), *_ = _windows(tiny_model, scored)
    reference = Reference.from_log_probs(log_probs[:10], targets[:10], top_k=4)
    with pytest.raises(ValueError, match="reference has 10 tokens"):
        compare(log_probs, targets, reference)
