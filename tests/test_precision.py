"""Each precision converts the right layers with real low-precision kernels and stays close to FP32."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from evalbench.backends.torch.precision.base import replace_linears
from evalbench.backends.torch.precision.bf16 import BF16
from evalbench.backends.torch.precision.fp32 import FP32
from evalbench.backends.torch.precision.int4 import Int4WeightOnly, Int4WeightOnlyLinear
from evalbench.backends.torch.precision.int8 import Int8WeightOnly, Int8WeightOnlyLinear
from evalbench.backends.torch.precision.int8_dynamic import Int8Dynamic, Int8DynamicLinear
from evalbench.errors import PrecisionError
from evalbench.metrics.memory import weight_bytes

PRECISIONS = {
    "fp32": (FP32, None, 1e-6),  # from a float64 copy: the cast must give back the fp32 weights exactly
    "bf16": (BF16, None, 0.03),
    "int8": (Int8WeightOnly, Int8WeightOnlyLinear, 0.03),
    "int8_dynamic": (Int8Dynamic, Int8DynamicLinear, 0.05),
    "int4": (Int4WeightOnly, Int4WeightOnlyLinear, 0.15),
}


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("name", PRECISIONS)
def test_precision_tracks_fp32_logits(name, tiny_model, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    cls, layer_type, tolerance = PRECISIONS[name]
    ids = torch.randint(0, tiny_model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    reference = _logits(tiny_model, ids)
    loaded_as = torch.float64 if name == "fp32" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=loaded_as).eval()
    converted = cls().apply(model)
    error = ((_logits(converted, ids) - reference).norm() / reference.norm()).item()
    assert error < tolerance, f"{name}: relative logit error {error:.4f}"
    if name == "fp32":
        assert {p.dtype for p in converted.parameters()} == {torch.float32}
    if layer_type is not None:
        converted_layers = [m for m in converted.modules() if isinstance(m, layer_type)]
        assert len(converted_layers) == 2 * 7  # q k v o gate up down in each of 2 layers
        assert isinstance(converted.lm_head, nn.Linear), "the output head is skipped by default"


def test_quantized_weights_are_smaller(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    sizes = {}
    for name, (cls, _, _) in PRECISIONS.items():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        sizes[name] = weight_bytes(cls(skip_modules=[]).apply(model))
    assert sizes["fp32"] > sizes["bf16"] > sizes["int8"] > sizes["int4"]
    assert sizes["int8_dynamic"] < sizes["bf16"]


def test_int8_weight_only_matches_its_dequantized_weights():
    torch.manual_seed(0)
    linear = nn.Linear(64, 96, bias=True)
    layer = Int8WeightOnlyLinear(linear)
    dequantized = layer.weight.float() * layer.scales.float()[:, None]
    x = torch.randn(5, 64)
    expected = x.bfloat16().float() @ dequantized.t() + linear.bias.detach()
    assert torch.allclose(layer(x.bfloat16()).float(), expected, rtol=0.02, atol=0.02)
    assert (dequantized - linear.weight).abs().max() <= layer.scales.float().max() / 2 + 1e-3


def test_int8_dynamic_scales_each_token_on_its_own():
    """A per-tensor activation scale would let one huge token wreck the others; per-token must not."""
    torch.manual_seed(0)
    linear = nn.Linear(128, 64, bias=False)
    layer = Int8DynamicLinear(linear)
    x = torch.randn(4, 128)
    alone = layer(x[1:])
    x_with_outlier = x.clone()
    x_with_outlier[0] *= 1000.0
    together = layer(x_with_outlier)[1:]
    assert torch.allclose(alone, together, rtol=1e-5, atol=1e-5)
    reference = linear(x)
    assert ((layer(x) - reference).norm() / reference.norm()) < 0.03


ERRORS_SCRIPT = """
import json, torch
from torch import nn
from evalbench.backends.torch.precision.int8_dynamic import Int8DynamicLinear
torch.manual_seed(0)
linear, x = nn.Linear(1536, 576, bias=False), torch.randn(64, 1536)
with torch.no_grad():
    reference = linear(x)
    print(json.dumps({r: ((Int8DynamicLinear(linear, r)(x) - reference).norm() / reference.norm()).item()
                      for r in ("none", "weights", "activations")}))
"""


def _int8_dynamic_errors(**env: str) -> dict[str, float]:
    """Relative output error per reduce_range on a 1536x576 layer, in a fresh process with ``env``."""
    out = subprocess.run(
        [sys.executable, "-c", ERRORS_SCRIPT], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_int8_dynamic_keeps_fbgemm_from_saturating():
    """FBGEMM's pre-VNNI kernels sum pairs of u8 x s8 products in int16, which saturates with full 8-bit
    operands; either guard keeps the error small. Forced here with FBGEMM_ENABLE_INSTRUCTIONS=AVX2."""
    avx2 = _int8_dynamic_errors(FBGEMM_ENABLE_INSTRUCTIONS="AVX2")
    assert avx2["weights"] < 0.03 and avx2["activations"] < 0.03, avx2
    assert avx2["none"] > 5 * avx2["weights"], avx2  # saturated
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if re.search(r"\b(avx512_vnni|avx_vnni)\b", flags):  # VNNI sums in int32: full 8 bits are the most accurate
        native = _int8_dynamic_errors()
        assert native["none"] < min(native["weights"], native["activations"]), native


def test_int8_dynamic_reduce_range_is_validated():
    with pytest.raises(PrecisionError, match=r"reduce_range='yes' is invalid; valid: \['weights'"):
        Int8Dynamic(reduce_range="yes")


def test_int4_group_size_is_validated():
    with pytest.raises(PrecisionError, match=r"group_size=48 .*valid: \[32, 64, 128, 256\]"):
        Int4WeightOnly(group_size=48)


def test_int4_rejects_layers_not_divisible_by_group(tiny_model):
    with pytest.raises(PrecisionError, match=r"in_features=64 is not divisible by precision.group_size=128"):
        Int4WeightOnly(group_size=128).apply(tiny_model)


def test_int4_smaller_groups_are_more_accurate(tiny_model_dir, tiny_model):
    from transformers import AutoModelForCausalLM

    ids = torch.arange(32).unsqueeze(0)
    reference = _logits(tiny_model, ids)
    errors = []
    for group_size in (32, 64):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        logits = _logits(Int4WeightOnly(group_size=group_size).apply(model), ids)
        errors.append(((logits - reference).norm() / reference.norm()).item())
    assert errors[0] < errors[1]


def test_replace_linears_needs_a_target(tiny_model):
    with pytest.raises(PrecisionError, match=r"no nn\.Linear layer to convert"):
        replace_linears(tiny_model, ["model", "lm_head"], lambda _, layer: layer)


def test_describe_records_scheme_and_kernel():
    described = Int4WeightOnly(group_size=64).describe()
    assert described["precision"] == "int4" and described["group_size"] == 64
    assert "_weight_int4pack_mm_for_cpu" in described["implementation"]
    assert torch.__version__ in Int8WeightOnly().describe()["implementation"]
