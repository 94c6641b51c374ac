"""In-process sweeps keep the last loaded backend: the next configuration of the same model, backend and
precision (another thread count or batch size) skips loading and converting it. A configuration of
anything else drops it first, so its memory never counts against the next one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from evalbench.backends.base import Backend


@dataclass
class LoadedBackend:
    key: str
    backend: Backend
    fields: dict[str, Any]  # the record fields of the run that loaded it


_kept: LoadedBackend | None = None


def reuse_key(model_cfg: Any, configuration: dict[str, Any], cache_dir: str) -> str:
    return json.dumps(
        {"model": model_cfg, "precision": configuration, "cache_dir": cache_dir}, sort_keys=True, default=str
    )


def take(key: str) -> LoadedBackend | None:
    """The kept backend when it is ``key``'s; otherwise drop whatever is kept and return None."""
    global _kept
    if _kept is not None and _kept.key == key:
        return _kept
    if _kept is not None:
        _kept.backend.close()
    _kept = None
    return None


def keep(entry: LoadedBackend) -> None:
    global _kept
    _kept = entry
