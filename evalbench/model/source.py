"""Where a model config points: a local directory, a hub id, or a GGUF file (maybe inside a package)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from evalbench.config import ModelConfig
from evalbench.errors import EvalbenchError


@dataclass(frozen=True)
class ModelSource:
    """A resolved checkpoint location."""

    location: str  # a local directory or a hub id
    gguf_file: str | None
    is_local: bool

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.location) / self.gguf_file if self.gguf_file and self.is_local else None


def _package_dir(package: str, install: str | None) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = f"; install it with: {install}" if install else ""
        raise EvalbenchError(f"the model's package {package!r} is not installed{hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_source(cfg: ModelConfig) -> ModelSource:
    """Resolve ``cfg`` to a checkpoint location, failing with one line on anything that cannot exist."""
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if path.exists():
            if not path.is_dir():
                raise EvalbenchError(
                    f"model.path={cfg.path!r} is a file; give its directory as model.path and its name as "
                    "model.gguf_file"
                )
            location, is_local = str(path.resolve()), True
        elif cfg.path.startswith((".", "/", "~")) or cfg.path.count("/") > 1:
            raise EvalbenchError(
                f"model.path={cfg.path!r} does not exist; valid: a local directory or a hub id like 'org/name'"
            )
        else:
            location, is_local = cfg.path, False
    elif cfg.package:
        location, is_local = str(_package_dir(cfg.package, cfg.install)), True
    else:
        raise EvalbenchError(f"model={cfg.name!r} sets neither model.path nor model.package")
    source = ModelSource(location, cfg.gguf_file, is_local)
    if source.gguf_path is not None and not source.gguf_path.is_file():
        present = sorted(p.name for p in Path(location).glob("*.gguf"))
        raise EvalbenchError(f"model.gguf_file={cfg.gguf_file!r} is not in {location}; GGUF files there: {present}")
    return source
