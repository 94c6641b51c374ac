"""The memory read bandwidth of this machine, and the decode roofline it sets.

Decoding one token reads every weight once (for the whole batch) plus each sequence's KV
cache, so decode tokens/s <= bandwidth / bytes read per step * batch size. A roofline that a
real runtime beats is no roofline, so the bandwidth is the best of several read kernels
(``torch.sum`` over float32 and int64, ``torch.amax`` over bytes: STREAM-style reductions that
read each byte once, whose best figure differs by CPU and thread count) at every thread count
from 1 to the run's, over a buffer the size of the decode step's working set rounded down to a
power of two: a working set that partly fits in the last-level cache is read faster, and a
runtime reading it every step gets that speed too. Figures are cached per machine, thread
count and buffer size in ``<cache_dir>/bandwidth/`` (``speed.remeasure_bandwidth=true`` measures again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evalbench.metrics.memory import weight_bytes
from evalbench.results import read_record, write_record

log = logging.getLogger(__name__)
METHOD_VERSION = 2  # cached figures of older methods are measured again
MIN_BUFFER_BYTES = 1 << 20
MAX_BUFFER_BYTES = 1 << 30  # larger than the last-level cache of any CPU this runs on
PASSES = 5
PASS_BYTES = 256 << 20  # a pass over a small buffer repeats it until it has read this much
KERNELS: dict[str, tuple[torch.dtype, Callable[[torch.Tensor], torch.Tensor]]] = {
    "sum float32": (torch.float32, torch.sum),
    "sum int64": (torch.int64, torch.sum),
    "amax uint8": (torch.uint8, torch.amax),
}


def buffer_bytes_for(working_set_bytes: float) -> int:
    """The power of two at or below the working set, within 1 MiB..1 GiB: never a slower buffer than the run's."""
    size = MIN_BUFFER_BYTES
    while size * 2 <= min(working_set_bytes, MAX_BUFFER_BYTES):
        size *= 2
    return size


def _kernel_rate(kernel: Callable[[torch.Tensor], torch.Tensor], buffer: torch.Tensor, passes: int) -> float:
    """Bytes per second of ``kernel`` reading ``buffer``, the best of ``passes`` timed passes."""
    repeats = max(1, PASS_BYTES // buffer.nbytes)
    kernel(buffer)  # fault the pages in
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        for _ in range(repeats):
            kernel(buffer)
        best = min(best, time.perf_counter() - started)
    return repeats * buffer.nbytes / best


def measure_read_bandwidth(threads: int, buffer_bytes: int = MAX_BUFFER_BYTES, passes: int = PASSES) -> dict[str, Any]:
    """The best read rate of every kernel in :data:`KERNELS` over ``buffer_bytes`` at ``threads`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rates = {}
        for name, (dtype, kernel) in KERNELS.items():
            buffer = torch.ones(buffer_bytes // torch.empty(0, dtype=dtype).element_size(), dtype=dtype)
            rates[name] = _kernel_rate(kernel, buffer, passes)
            del buffer
        best = max(rates, key=rates.get)
        return {"bytes_per_s": rates[best], "method": best, "rates": rates}
    finally:
        torch.set_num_threads(previous)


def _probe(folder: Path, machine_id: str, threads: int, buffer_bytes: int, remeasure: bool) -> dict[str, Any]:
    """The cached measurement at exactly ``threads`` threads and ``buffer_bytes``, measured when missing or asked."""
    name = f"{machine_id}-t{threads}-{buffer_bytes >> 20}MiB-v{METHOD_VERSION}"
    cached = None if remeasure else read_record(folder, name)
    if cached is not None:
        return {**cached, "file": cached["record_file"]}
    log.info("measuring memory read bandwidth, %d threads, %d MiB (cached in %s)", threads, buffer_bytes >> 20, folder)
    entry = {
        "run_id": name,
        **measure_read_bandwidth(threads, buffer_bytes),
        "threads": threads,
        "buffer_bytes": buffer_bytes,
        "machine_id": machine_id,
        "passes": PASSES,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {**entry, "file": str(write_record(folder, entry))}


def read_bandwidth(
    cache_dir: str | Path, machine_id: str, threads: int, working_set_bytes: float = MAX_BUFFER_BYTES,
    remeasure: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The read bandwidth a run with ``threads`` threads reading ``working_set_bytes`` per step can use: the
    best probe at 1 to ``threads`` threads.

    A run may use fewer of its threads, so the bound at ``threads`` is never below the one at fewer;
    a probe disturbed by a slow spell at one thread count is then covered by another.
    """
    folder = Path(cache_dir).expanduser() / "bandwidth"
    size = buffer_bytes_for(working_set_bytes)
    probes = [_probe(folder, machine_id, k, size, remeasure) for k in range(1, max(threads, 1) + 1)]
    return max(probes, key=lambda probe: probe["bytes_per_s"])


def kv_values_per_token(text_config: Any) -> int:
    """Values the KV cache holds per token: K and V of every layer's key-value heads."""
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    return 2 * text_config.num_hidden_layers * kv_heads * head_dim


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
    kv = batch_size * context_tokens * kv_values_per_token(model.config.get_text_config()) * embedding.element_size()
    return {"weights": float(weights), "kv_cache": float(kv), "total": float(weights + kv)}
