"""Log-probabilities from a window's logits, a chunk of positions at a time.

A window's logits are ``[n, vocab]``: with Gemma's 262,144 tokens, a float32 copy of 2,048
positions is 2 GiB, and the divergence's tail works in float64. So every step from logits to
metrics takes a chunk of :func:`rows_per_chunk` positions at a time: beyond the backend's own
logits, at most one chunk's scratch exists at once, :data:`SCRATCH_BYTES_PER_VALUE` bytes per
``[position, token]`` value (its float32 log-probabilities, then the tail's float64 masked copy
and the float64 temporary ``logsumexp`` makes of it), within :data:`BUDGET_BYTES` in all.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

BUDGET_BYTES = 256 * 2**20  # a chunk's scratch, all of it
SCRATCH_BYTES_PER_VALUE = 4 + 8 + 8  # float32 log-probs + float64 masked tail + float64 logsumexp temporary


def rows_per_chunk(vocab: int, budget: int | None = None) -> int:
    """Positions per chunk whose scratch fits ``budget`` bytes (:data:`BUDGET_BYTES` when None); at least one."""
    return max(1, (budget or BUDGET_BYTES) // (SCRATCH_BYTES_PER_VALUE * vocab))


def row_chunks(n: int, rows: int) -> list[slice]:
    """The slices cutting ``n`` positions into chunks of ``rows`` (the last one shorter)."""
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def scratch_bytes(window: int, vocab: int, budget: int | None = None) -> int:
    """The most scratch scoring a window of ``window`` positions holds beyond the backend's logits."""
    return min(window, rows_per_chunk(vocab, budget)) * vocab * SCRATCH_BYTES_PER_VALUE


def chunk_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Float32 log-probabilities of one chunk of logits ``[rows, vocab]`` (any float dtype)."""
    return torch.log_softmax(logits.float(), dim=-1)


def log_softmax_chunks(logits: torch.Tensor, budget: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Per chunk of positions of ``logits`` ``[n, vocab]``: its rows and their float32 log-probabilities."""
    for rows in row_chunks(logits.shape[0], rows_per_chunk(logits.shape[-1], budget)):
        yield rows, chunk_log_probs(logits[rows])


def log_softmax(logits: torch.Tensor, budget: int | None = None) -> torch.Tensor:
    """Float32 log-probabilities of every row of ``logits``, written chunk by chunk into one output."""
    out = torch.empty(logits.shape, dtype=torch.float32)
    for rows, log_probs in log_softmax_chunks(logits, budget):
        out[rows] = log_probs
    return out
