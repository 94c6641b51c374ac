"""The memory read bandwidth of this machine, and the decode roofline it sets.

Decoding one token reads every weight once (for the whole batch) plus each sequence's KV
cache, so decode tokens/s <= bandwidth / bytes read per step * batch size. The bandwidth is
measured once per machine fingerprint and thread count (the best of several passes summing a
buffer far larger than any cache) and kept in ``<cache_dir>/bandwidth/``; a run at ``t`` threads
uses the best figure at 1 to ``t`` threads.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evalbench.metrics.memory import weight_bytes
from evalbench.results import write_record

log = logging.getLogger(__name__)
BUFFER_BYTES = 1 << 30  # 1 GiB: larger than the last-level cache of any CPU this runs on
PASSES = 5


def measure_read_bandwidth(threads: int, buffer_bytes: int = BUFFER_BYTES, passes: int = PASSES) -> float:
    """Bytes per second read by ``torch.sum`` over a ``buffer_bytes`` float32 buffer, best of ``passes``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buffer = torch.ones(buffer_bytes // 4, dtype=torch.float32)
        buffer.sum()  # fault the pages in
        best = float("inf")
        for _ in range(passes):
            started = time.perf_counter()
            buffer.sum()
            best = min(best, time.perf_counter() - started)
        return buffer.nbytes / best
    finally:
        torch.set_num_threads(previous)


def _probe(folder: Path, machine_id: str, threads: int, remeasure: bool) -> dict[str, Any]:
    """The cached measurement at exactly ``threads`` threads, measured now when missing or asked to."""
    name = f"{machine_id}-t{threads}"
    path = folder / "records" / f"{name}.json"
    if path.is_file() and not remeasure:
        try:
            return {**json.loads(path.read_text(encoding="utf-8")), "file": str(path)}
        except ValueError:
            log.warning("re-measuring bandwidth: %s is unreadable", path)
    log.info("measuring memory read bandwidth with %d threads (once per machine; cached in %s)", threads, path)
    entry = {
        "run_id": name,
        "bytes_per_s": measure_read_bandwidth(threads),
        "threads": threads,
        "machine_id": machine_id,
        "method": f"best of {PASSES} torch.sum passes over {BUFFER_BYTES >> 20} MiB float32",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {**entry, "file": str(write_record(folder, entry))}


def read_bandwidth(cache_dir: str | Path, machine_id: str, threads: int, remeasure: bool = False) -> dict[str, Any]:
    """The read bandwidth a run with ``threads`` threads can use: the best probe at 1 to ``threads`` threads.

    A run may use fewer of its threads, so the bound at ``threads`` is never below the one at fewer;
    a probe disturbed by a slow spell at one thread count is then covered by another.
    """
    folder = Path(cache_dir).expanduser() / "bandwidth"
    probes = [_probe(folder, machine_id, k, remeasure) for k in range(1, max(threads, 1) + 1)]
    return max(probes, key=lambda probe: probe["bytes_per_s"])


def bytes_per_decode_step(model: nn.Module, batch_size: int, context_tokens: float) -> dict[str, float]:
    """Bytes one decode step reads: the weights as stored (the input embedding only where it is also
    the output projection, else one row per sequence) and each sequence's KV cache at ``context_tokens``."""
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = (
        output is not None
        and getattr(output, "weight", None) is not None
        and (output.weight.untyped_storage().data_ptr() == embedding.untyped_storage().data_ptr())
    )
    weights = weight_bytes(model)
    if not tied:
        weights -= embedding.nbytes - batch_size * embedding[0].nbytes
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * embedding.element_size()
    kv = batch_size * context_tokens * kv_per_token
    return {"weights": float(weights), "kv_cache": float(kv), "total": float(weights + kv)}


def roofline(
    model: nn.Module, batch_size: int, prompt_tokens: int, new_tokens: int, bandwidth: float
) -> dict[str, float]:
    """Record fields: the decode roofline at the mean context of the timed decode steps."""
    context = prompt_tokens + new_tokens / 2
    step = bytes_per_decode_step(model, batch_size, context)
    return {
        "decode_bytes_per_step": step["total"],
        "decode_weight_bytes_per_step": step["weights"],
        "decode_kv_bytes_per_step": step["kv_cache"],
        "roofline_tokens_per_s": batch_size * bandwidth / step["total"],
    }
