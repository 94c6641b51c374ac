"""Pruning on the tiny Llama: what magnitude pruning zeroes, what structured pruning removes, and that each
changes the model only as its description says."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from evalbench.errors import EvalbenchError
from evalbench.pruning.calibration import calibration_ids
from evalbench.pruning.magnitude import MagnitudePruning
from evalbench.pruning.structured import StructuredPruning, channel_importance, gated_mlps


def test_magnitude_zeroes_the_smallest_weights_of_each_layer(tiny_model):
    original = copy.deepcopy(tiny_model)
    fields = MagnitudePruning(sparsity=0.3).apply(tiny_model)
    layers = [(n, m) for n, m in tiny_model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    assert fields["pruning_layers"] == len(layers) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    zeroed = 0
    for name, layer in layers:
        before = original.get_submodule(name).weight.detach()
        mask = layer.weight == 0
        assert int(mask.sum()) == round(0.3 * before.numel())  # per layer, not over the whole model
        assert before[mask].abs().max() <= before[~mask].abs().min()  # the smallest |w| went
        assert torch.equal(layer.weight[~mask], before[~mask])  # the rest untouched
        zeroed += int(mask.sum())
    assert fields["pruning_zeroed_parameters"] == zeroed and fields["pruning_removed_parameters"] == 0
    assert torch.equal(tiny_model.lm_head.weight, original.lm_head.weight)  # skip_modules


CALIBRATION = torch.arange(3, 99)  # 96 token ids of the tiny vocabulary


def structured(sparsity: float, multiple_of: int) -> StructuredPruning:
    pruning = StructuredPruning(sparsity=sparsity, multiple_of=multiple_of)
    pruning.calibration = CALIBRATION
    return pruning


def test_structured_pruning_removes_the_weakest_channels_and_nothing_else(tiny_model):
    original = copy.deepcopy(tiny_model)
    mlp_before = gated_mlps(original)[0]
    inputs = []  # what down_proj of layer 0 sees on the calibration tokens, computed here by hand
    mlp_before.down_proj.register_forward_pre_hook(lambda _m, args: inputs.append(args[0][0]))
    with torch.no_grad():
        original(CALIBRATION[None])
    by_hand = inputs[0].abs().mean(dim=0) * mlp_before.down_proj.weight.norm(dim=0)
    weakest = by_hand.argsort()[:64]  # 128 channels, sparsity 0.5: 64 go
    fields = structured(0.5, 16).apply(tiny_model)
    mlp = gated_mlps(tiny_model)[0]
    assert (mlp.gate_proj.out_features, mlp.up_proj.out_features, mlp.down_proj.in_features) == (64, 64, 64)
    hidden = tiny_model.config.hidden_size
    assert fields["pruning_removed_parameters"] == 2 * 3 * hidden * 64  # 2 MLPs x 3 matrices x 64 channels
    assert fields["pruning_kept_channels"] == 64 and tiny_model.config.intermediate_size == 64
    x = torch.randn(3, 5, hidden)
    with torch.no_grad():  # the pruned MLP is the original with the weakest channels' down column zeroed
        mlp_before.down_proj.weight[:, weakest] = 0
        assert torch.allclose(mlp(x), mlp_before(x), atol=1e-6)
        tokens = torch.tensor([[5, 9, 30, 7]])
        assert not torch.allclose(tiny_model(tokens).logits, original(tokens).logits)


def test_importance_reads_activations_not_only_weights(tiny_model):
    """A channel with tiny weights but a large activation is kept; weight norms alone would drop it."""
    mlp = gated_mlps(tiny_model)[0]
    with torch.no_grad():
        mlp.down_proj.weight[:, 7] *= 1e-3  # channel 7: small down column ...
        mlp.up_proj.weight[7] *= 1e5  # ... but an activation 1e5 larger
    importance = channel_importance(tiny_model, [mlp], CALIBRATION)[0]
    weights_only = mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)
    assert importance.argmax() == 7 and weights_only.argsort()[0] != 7


def test_calibration_tokens_come_from_the_end_of_the_text(tiny_tokenizer, wikitext):
    ids, overlaps = calibration_ids(wikitext, 20_000, tiny_tokenizer, 100)
    assert len(ids) == 100 and not overlaps
    assert ids.tolist() == tiny_tokenizer(wikitext[-4000:], add_special_tokens=False)["input_ids"][-100:]
    assert calibration_ids(wikitext, len(wikitext), tiny_tokenizer, 100)[1]  # the whole text scored


def test_structured_pruning_without_calibration_is_refused(tiny_model):
    with pytest.raises(EvalbenchError, match="pruning=structured needs calibration tokens"):
        StructuredPruning().apply(tiny_model)


def test_structured_kept_channels_round_to_the_multiple():
    pruning = StructuredPruning(sparsity=0.25, multiple_of=64)
    assert [pruning.kept_channels(n) for n in (1536, 128, 64)] == [1152, 64, 64]


def test_structured_pruning_needs_gated_mlps():
    with pytest.raises(EvalbenchError, match=r"needs gated MLPs .*valid for it: pruning=magnitude"):
        structured(0.25, 64).apply(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)))


@pytest.mark.parametrize("sparsity", [0, 1, -0.1, 1.5])
def test_sparsity_outside_zero_one_is_refused(sparsity):
    with pytest.raises(EvalbenchError, match=rf"pruning.sparsity={sparsity} is invalid; valid: a number in \(0, 1\)"):
        MagnitudePruning(sparsity=sparsity)
