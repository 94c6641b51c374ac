"""Memory figures: peak resident set size of the process and bytes held by the weights."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import sys
from pathlib import Path

from torch import nn

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs``); False where it cannot be reset."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (``VmHWM``, ``VmRSS``); None where there is none."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss_bytes() -> int:
    """The process's resident set size now (0 where it cannot be read)."""
    return _status_bytes("VmRSS") or 0


def peak_rss_bytes() -> int:
    """The process's peak resident set size since start or the last :func:`reset_peak_rss`."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers as stored after conversion (shared storage counted once).

    Layers whose weights live in an opaque packed object report them as ``packed_nbytes``.
    """
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total + sum(getattr(module, "packed_nbytes", 0) for module in model.modules())
