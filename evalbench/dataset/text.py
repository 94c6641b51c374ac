"""Load an evaluation split as one text: a local raw file, or a hub dataset through ``datasets``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from evalbench.config import DatasetConfig
from evalbench.errors import EvalbenchError

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class EvalText:
    text: str
    source: str  # the file read, or "hub:<path>/<name>:<split>"


def offline() -> bool:
    return any(os.environ.get(var, "").lower() in _TRUE for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def read_utf8(path: Path, what: str) -> str:
    """The text of ``path``; a file in another encoding is one line naming it and where it stops being UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalbenchError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}: "
            f"{exc.reason}); valid: a UTF-8 text file, e.g. converted with iconv -f <its encoding> -t utf-8"
        ) from None


def load_text(cfg: DatasetConfig) -> EvalText:
    """The split's rows joined in order, one per line (the layout of WikiText's raw files)."""
    if cfg.data_dir:
        path = Path(cfg.data_dir).expanduser() / cfg.local_file
        if not path.is_file():
            raise EvalbenchError(
                f"dataset file {str(path)!r} not found; EVALBENCH_DATA_DIR / dataset.data_dir={cfg.data_dir!r} "
                f"must hold {cfg.local_file}"
            )
        return EvalText(read_utf8(path, "dataset file"), str(path))
    if offline():
        raise EvalbenchError(
            f"dataset={cfg.name!r} needs local files while offline: set EVALBENCH_DATA_DIR to a folder "
            f"holding {cfg.local_file}"
        )
    import datasets

    rows = datasets.load_dataset(cfg.hub_path, cfg.hub_name, split=cfg.split)[cfg.text_field]
    text = "".join(row if row.endswith("\n") else row + "\n" for row in rows)
    return EvalText(text, f"hub:{cfg.hub_path}/{cfg.hub_name}:{cfg.split}")
