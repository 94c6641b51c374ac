"""torch.compile of the decode step over a static KV cache, as Transformers' ``generate`` does it.

Transformers compiles the model's forward for the decode steps (prefill stays eager) when the
cache is static and a ``CompileConfig`` is given; on a CPU it does so only when asked
(``_compile_all_devices``). Inductor's compiled graphs are cached on disk under
``cache_dir/inductor`` (FX graph and AOTAutograd caches), with kernels that read the thread
count at run time, so a sweep compiles once per model, precision and batch size.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import CompileConfig

from evalbench.backends.torch.config import TorchConfig
from evalbench.errors import EvalbenchError

CACHE_COUNTERS = {  # record field -> (torch._dynamo counters group, name)
    "compile_fx_graph_cache_hits": ("inductor", "fxgraph_cache_hit"),
    "compile_fx_graph_cache_misses": ("inductor", "fxgraph_cache_miss"),
    "compile_fx_graph_cache_bypasses": ("inductor", "fxgraph_cache_bypass"),
    "compile_graphs": ("stats", "unique_graphs"),
}


def configure_inductor(config: TorchConfig, cache_dir: Path) -> Path:
    """Inductor's settings for CPU inference; returns its on-disk cache folder."""
    import torch._inductor.config as inductor

    folder = cache_dir / "inductor"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    inductor.fx_graph_cache = True
    inductor.cpp.dynamic_threads = True  # kernels take the thread count at run time: one graph for every count
    inductor.freezing = config.freezing
    return folder


def compile_config(config: TorchConfig) -> CompileConfig:
    """The ``compile_config`` given to ``generate``: the whole decode step as one graph, or an error."""
    compiled = CompileConfig(fullgraph=True, dynamic=False, mode=config.compile_mode)
    compiled._compile_all_devices = True  # Transformers compiles on CPU only when told to
    return compiled


@contextlib.contextmanager
def compiler_errors(precision: str) -> Iterator[None]:
    """Turn a compiler failure into one line: the compiler's first line, naming the precision."""
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise EvalbenchError(
            f"backend.compile=true: torch.compile cannot compile precision={precision}: {type(exc).__name__}: "
            f"{first}; valid: backend.compile=false, or another precision"
        ) from None  # the compiler's message spans pages: its first line says it


def counters() -> Counter:
    """The compile counters this process has accumulated so far."""
    from torch._dynamo.utils import counters as dynamo

    return Counter({field: dynamo[group][name] for field, (group, name) in CACHE_COUNTERS.items()})


def compile_fields(model: torch.nn.Module, before: Counter, seconds: float) -> dict[str, Any]:
    """Record fields of one compilation: its time and what the on-disk caches gave.

    Raises when ``generate`` took the eager path: a compiled run is never silently eager.
    """
    if not hasattr(model, "_compiled_call"):
        raise RuntimeError("backend.compile=true but generate ran the model eagerly (nothing was compiled)")
    after = counters()
    return {"compile_time_s": seconds, **{field: after[field] - before[field] for field in CACHE_COUNTERS}}
