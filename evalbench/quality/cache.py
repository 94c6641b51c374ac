"""Quality does not depend on threads or batch size: compute it once per model, precision and data.

Entries live in ``<results_dir>/quality_cache/records/<key>.json``; the key hashes everything
that changes the scores (checkpoint, precision fields, scored tokens or task data, settings
and library versions). Records say when a figure came from a cached entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from evalbench.results import write_record

CACHE_SUBDIR = "quality_cache"


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def folder_identity(location: str) -> list[tuple[str, int, int]]:
    """Names, sizes and modification times of the files in a local folder (empty for a hub id)."""
    folder = Path(location)
    if not folder.is_dir():
        return []
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())


def load(results_dir: str | Path, key: str) -> dict[str, Any] | None:
    path = Path(results_dir) / CACHE_SUBDIR / "records" / f"{key}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def store(results_dir: str | Path, key: str, entry: dict[str, Any]) -> None:
    write_record(Path(results_dir) / CACHE_SUBDIR, {**entry, "run_id": key})
