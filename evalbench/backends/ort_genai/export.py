"""The ONNX models the ONNX Runtime GenAI backend runs, exported by its model builder.

The builder (``python -m onnxruntime_genai.models.builder``) reads the model's FP32 Hugging
Face checkpoint and writes ``model.onnx``, ``model.onnx.data`` and ``genai_config.json`` at
the precision's ``--precision`` and ``--extra_options``. The head is never pruned: scoring
needs the logits of every position. Each export is made once per source checkpoint,
onnxruntime-genai version and option set, in ``<cache_dir>/ort_genai/<digest>/``, behind a
file lock, and moved into place whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from filelock import FileLock

from evalbench.errors import EvalbenchError
from evalbench.model.loader import checkpoint_dir
from evalbench.progress import logged_step

BUILDER = "onnxruntime_genai.models.builder"
RECORD = "evalbench_export.json"
LOG = "builder.log"
FIXED_OPTIONS = {"prune_lm_head": "false"}  # logits for every position, not only the last
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
log = logging.getLogger(__name__)


def source_dir(model_cfg: Any, cache_dir: Path) -> Path:
    """The FP32 Hugging Face checkpoint directory of the model (a hub id is downloaded)."""
    location = Path(checkpoint_dir(model_cfg, cache_dir)[0])
    if location.is_dir():
        return location
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(location), revision=getattr(model_cfg, "revision", None)))


def _identity(folder: Path) -> str:
    """Path, size and modification time of the checkpoint's weights and configs."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".safetensors", ".bin"))
    return ";".join(f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files)


def versions() -> str:
    return f"onnxruntime-genai {version('onnxruntime-genai')}, onnxruntime {version('onnxruntime')}"


def _digest(source: Path, builder_precision: str, options: dict[str, str]) -> str:
    key = f"{_identity(source)}|{versions()}|{builder_precision}|{json.dumps(options, sort_keys=True)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def builder_error(log_text: str) -> str:
    """The builder's own reason for failing: its last exception line, else its last line."""
    lines = [ANSI.sub("", line).strip() for line in log_text.splitlines()]
    lines = [line for line in lines if line]
    raised = [line for line in lines if EXCEPTION_LINE.match(line)]
    return (raised or lines or ["(no output)"])[-1]


def _command(source: Path, out: Path, hf_cache: Path, builder_precision: str, options: dict[str, str]) -> list[str]:
    extra = [f"{key}={value}" for key, value in options.items()]
    paths = ["-i", str(source), "-o", str(out), "-c", str(hf_cache)]
    return [sys.executable, "-m", BUILDER, *paths, "-p", builder_precision, "-e", "cpu", "--extra_options", *extra]


def run_builder(source: Path, out: Path, builder_precision: str, options: dict[str, str]) -> None:
    """Export ``source`` into ``out``; raise :class:`EvalbenchError` with the builder's message when it fails."""
    out.mkdir(parents=True)
    log_path = out / LOG
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="hf-cache-") as hf_cache, log_path.open("w") as log:
        command = _command(source, out, Path(hf_cache), builder_precision, options)
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if status != 0 or not (out / "genai_config.json").is_file():
        reason = builder_error(log_path.read_text(encoding="utf-8", errors="replace"))
        shown = " ".join(f"{key}={value}" for key, value in options.items())
        raise EvalbenchError(
            f"the onnxruntime-genai model builder could not export {source} at --precision {builder_precision} "
            f"--extra_options {shown} (exit status {status}): {reason}"
        )


def _once(target: Path, make: Callable[[Path], None], record: dict[str, Any]) -> dict[str, Any]:
    """Make the folder ``target`` with ``make(staging)`` unless cached; return its record (with ``convert_time_s``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / RECORD).is_file():
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
            try:
                started = time.perf_counter()
                what = f"exporting {record['source']} at --precision {record['builder_precision']} (once; cached)"
                with logged_step(log, what):
                    make(staging / "model")
                done = {**record, "convert_time_s": time.perf_counter() - started}
                (staging / "model" / RECORD).write_text(json.dumps(done, indent=1), encoding="utf-8")
                shutil.rmtree(target, ignore_errors=True)  # an incomplete folder left by hand
                os.replace(staging / "model", target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return json.loads((target / RECORD).read_text(encoding="utf-8"))


def exported_model(model_cfg: Any, precision: Any, cache_dir: str | Path, extra: dict[str, str]) -> tuple[Path, dict]:
    """The folder of the model exported at ``precision`` (an :class:`OnnxPrecision`), and its record fields.

    ``extra`` are further builder options (``backend.builder_options``).
    """
    cache_dir = Path(cache_dir).expanduser()
    source = source_dir(model_cfg, cache_dir)
    options = {**precision.builder_options(), **extra, **FIXED_OPTIONS}
    target = cache_dir / "ort_genai" / _digest(source, precision.builder_precision, options)
    record = {
        "source": str(source),
        "builder_precision": precision.builder_precision,
        "builder_options": options,
        "versions": versions(),
    }
    record = _once(target, lambda out: run_builder(source, out, precision.builder_precision, options), record)
    files = [target / name for name in ("model.onnx", "model.onnx.data") if (target / name).is_file()]
    return target, {
        "onnx_source": record["source"],
        "onnx_builder_options": " ".join(f"{k}={v}" for k, v in record["builder_options"].items()),
        "model_file": str(target / "model.onnx"),
        "model_file_bytes": sum(path.stat().st_size for path in files),
        "convert_time_s": record["convert_time_s"],
        "builder_versions": record["versions"],
    }
