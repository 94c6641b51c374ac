"""Files a backend converts once and keeps: a folder made behind a file lock and moved into place whole.

Used for the exports of the model (ONNX, OpenVINO IR) each backend converts from the Hugging Face
checkpoint; the folder's name is a digest of everything that shapes its contents.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from evalbench.model.loader import checkpoint_dir
from evalbench.progress import logged_step

RECORD = "evalbench_export.json"
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
log = logging.getLogger(__name__)


def source_dir(model_cfg: Any, cache_dir: Path) -> Path:
    """The Hugging Face checkpoint directory of the model (a hub id is downloaded; a GGUF de-quantized to FP32)."""
    location = Path(checkpoint_dir(model_cfg, cache_dir)[0])
    if location.is_dir():
        return location
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(location), revision=getattr(model_cfg, "revision", None)))


def folder_identity(folder: Path) -> str:
    """Path, size and modification time of a checkpoint's (or export's) weights and configs."""
    suffixes = (".json", ".safetensors", ".bin", ".xml")
    files = sorted(p for p in folder.iterdir() if p.suffix in suffixes and p.name != RECORD)
    return ";".join(f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files)


def digest(*parts: object) -> str:
    """A short digest of ``parts`` (JSON-encoded, keys sorted): a cached folder's name."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def last_error_line(log_text: str) -> str:
    """A converter's own reason for failing, from its log: its last exception line, else its last line."""
    lines = [ANSI.sub("", line).strip() for line in log_text.splitlines()]
    lines = [line for line in lines if line]
    raised = [line for line in lines if EXCEPTION_LINE.match(line)]
    return (raised or lines or ["(no output)"])[-1]


def cached_folder(target: Path, make: Callable[[Path], None], record: dict[str, Any], what: str) -> dict[str, Any]:
    """Make the folder ``target`` with ``make(staging)`` unless cached; return its record (with ``convert_time_s``).

    ``what`` says what is made, for the log (``exporting ... at ...``).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / RECORD).is_file():
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
            try:
                started = time.perf_counter()
                with logged_step(log, f"{what} (once; cached in {target})"):
                    make(staging / "model")
                done = {**record, "convert_time_s": time.perf_counter() - started}
                (staging / "model" / RECORD).write_text(json.dumps(done, indent=1), encoding="utf-8")
                shutil.rmtree(target, ignore_errors=True)  # an incomplete folder left by hand
                os.replace(staging / "model", target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return json.loads((target / RECORD).read_text(encoding="utf-8"))
