"""Reference distributions, stored once per model and scored-token set and shared by every run.

A reference lives in ``<results_dir>/quality_cache/references/<key>.safetensors`` with a
JSON sidecar naming the run that computed it. A file lock makes concurrent runs compute it
once; files are written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from evalbench.metrics.divergence import Reference
from evalbench.quality.cache import CACHE_SUBDIR

REFERENCES_SUBDIR = "references"


@dataclass(frozen=True)
class ReferenceStore:
    """Where one reference lives, and how to read, write and lock it."""

    folder: Path
    key: str

    @classmethod
    def under(cls, results_dir: str | Path, key: str) -> ReferenceStore:
        return cls(Path(results_dir) / CACHE_SUBDIR / REFERENCES_SUBDIR, key)

    @property
    def path(self) -> Path:
        return self.folder / f"{self.key}.safetensors"

    @property
    def meta_path(self) -> Path:
        return self.folder / f"{self.key}.json"

    def exists(self) -> bool:
        return self.path.is_file() and self.meta_path.is_file()

    def lock(self) -> FileLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.folder / f"{self.key}.lock"))

    def load(self) -> Reference:
        return Reference.load(self.path)

    def meta(self) -> dict[str, Any]:
        """The sidecar: which run computed the reference, at what precision, its size."""
        return json.loads(self.meta_path.read_text(encoding="utf-8"))

    def save(self, reference: Reference, meta: dict[str, Any]) -> None:
        """Write the tensors, then the sidecar that marks them complete; each atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for target, write in (
            (self.path, reference.save),
            (self.meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2), encoding="utf-8")),
        ):
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=target.suffix)
            os.close(fd)
            try:
                write(tmp)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
