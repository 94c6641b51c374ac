"""The ONNX models the ONNX Runtime GenAI backend runs, exported by its model builder.

The builder (``python -m onnxruntime_genai.models.builder``) reads the model's FP32 Hugging
Face checkpoint and writes ``model.onnx``, ``model.onnx.data`` and ``genai_config.json`` at
the precision's ``--precision`` and ``--extra_options``. The head is never pruned: scoring
needs the logits of every position. Each export is made once per source checkpoint,
onnxruntime-genai version and option set, in ``<cache_dir>/ort_genai/<digest>/``, behind a
file lock, and moved into place whole.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from evalbench.backends.cached_folder import cached_folder, digest, folder_identity, last_error_line, source_dir
from evalbench.errors import EvalbenchError

BUILDER = "onnxruntime_genai.models.builder"
LOG = "builder.log"
FIXED_OPTIONS = {"prune_lm_head": "false"}  # logits for every position, not only the last
log = logging.getLogger(__name__)


def versions() -> str:
    return f"onnxruntime-genai {version('onnxruntime-genai')}, onnxruntime {version('onnxruntime')}"


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
        reason = last_error_line(log_path.read_text(encoding="utf-8", errors="replace"))
        shown = " ".join(f"{key}={value}" for key, value in options.items())
        raise EvalbenchError(
            f"the onnxruntime-genai model builder could not export {source} at --precision {builder_precision} "
            f"--extra_options {shown} (exit status {status}): {reason}"
        )


def exported_model(model_cfg: Any, precision: Any, cache_dir: str | Path, extra: dict[str, str]) -> tuple[Path, dict]:
    """The folder of the model exported at ``precision`` (an :class:`OnnxPrecision`), and its record fields.

    ``extra`` are further builder options (``backend.builder_options``).
    """
    cache_dir = Path(cache_dir).expanduser()
    source = source_dir(model_cfg, cache_dir)
    options = {**precision.builder_options(), **extra, **FIXED_OPTIONS}
    target = cache_dir / "ort_genai" / digest(folder_identity(source), versions(), precision.builder_precision, options)
    record = {
        "source": str(source),
        "builder_precision": precision.builder_precision,
        "builder_options": options,
        "versions": versions(),
    }
    what = f"exporting {source} at --precision {precision.builder_precision}"
    make = functools.partial(run_builder, source, builder_precision=precision.builder_precision, options=options)
    record = cached_folder(target, make, record, what)
    files = [target / name for name in ("model.onnx", "model.onnx.data") if (target / name).is_file()]
    return target, {
        "onnx_source": record["source"],
        "onnx_builder_options": " ".join(f"{k}={v}" for k, v in record["builder_options"].items()),
        "model_file": str(target / "model.onnx"),
        "model_file_bytes": sum(path.stat().st_size for path in files),
        "convert_time_s": record["convert_time_s"],
        "builder_versions": record["versions"],
    }
