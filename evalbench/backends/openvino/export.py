"""The OpenVINO IRs the backend runs: the checkpoint exported once in float32, then compressed per precision.

optimum-intel's ``optimum-cli export openvino --task text-generation-with-past --weight-format fp32``
writes the stateful IR (the KV cache in the model's state, logits for every position) once per
checkpoint and exporter version. ``ov_int8`` and ``ov_int4`` are that IR's weights compressed by
``nncf.compress_weights`` here, once per precision and calibration (AWQ, GPTQ: their tokens are in
the key). Each folder lives in ``<cache_dir>/openvino/`` and is made behind a file lock.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from evalbench.backends.cached_folder import cached_folder, digest, folder_identity, last_error_line, source_dir
from evalbench.backends.openvino.exporter import exporter_python, exporter_versions
from evalbench.errors import EvalbenchError

MODEL_XML = "openvino_model.xml"
LOG = "exporter.log"
EXPORT_ARGS = ("--task", "text-generation-with-past", "--weight-format", "fp32")
log = logging.getLogger(__name__)


def run_exporter(python: Path, source: Path, trust_remote_code: bool, out: Path) -> None:
    """Export ``source`` to a float32 IR in ``out``; raise with the exporter's own reason when it fails."""
    out.mkdir(parents=True)
    command = [str(python), "-m", "optimum.commands.optimum_cli", "export", "openvino", "-m", str(source), *EXPORT_ARGS]
    command += ["--trust-remote-code"] * trust_remote_code + [str(out)]
    with (out / LOG).open("w") as log_file:
        status = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False).returncode
    if status != 0 or not (out / MODEL_XML).is_file():
        reason = last_error_line((out / LOG).read_text(encoding="utf-8", errors="replace"))
        raise EvalbenchError(f"optimum-intel could not export {source} to OpenVINO (exit status {status}): {reason}")


def float_ir(model_cfg: Any, cache_dir: Path, configured_python: str | None) -> tuple[Path, dict[str, Any]]:
    """The float32 IR of the model (exported on first use) and its record."""
    source = source_dir(model_cfg, cache_dir)
    python = exporter_python(cache_dir, configured_python)
    exporter = exporter_versions(python)
    target = cache_dir / "openvino" / f"{source.name}-{digest(folder_identity(source), exporter, EXPORT_ARGS)}"
    record = {"source": str(source), "exporter": exporter, "export_args": " ".join(EXPORT_ARGS)}
    make = functools.partial(run_exporter, python, source, bool(getattr(model_cfg, "trust_remote_code", False)))
    return target, cached_folder(target, make, record, f"exporting {source} to OpenVINO IR with optimum-intel")


def calibration_dataset(windows: list[np.ndarray]) -> Any:
    """An ``nncf.Dataset`` of the stateful IR's inputs: each window a fresh sequence (NNCF resets the state)."""
    import nncf

    def inputs(ids: np.ndarray) -> dict[str, np.ndarray]:
        length = len(ids)
        return {
            "input_ids": ids.astype(np.int64)[None],
            "attention_mask": np.ones((1, length), dtype=np.int64),
            "position_ids": np.arange(length, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }

    return nncf.Dataset(windows, inputs)


def _compression_arguments(precision: Any, calibration: Any) -> dict[str, Any]:
    """``nncf.compress_weights``' keyword arguments for ``precision`` and ``calibration``."""
    import nncf

    arguments = precision.compression()
    arguments["mode"] = nncf.CompressWeightsMode[arguments["mode"]]
    if "backup_mode" in arguments:
        arguments["backup_mode"] = nncf.BackupMode[arguments["backup_mode"].upper()]
    if calibration.enabled:
        windows = [ids.numpy() for ids in calibration.windows]
        arguments.update(calibration.nncf_arguments(), dataset=calibration_dataset(windows), subset_size=len(windows))
    return arguments


def compress(base: Path, precision: Any, calibration: Any, out: Path) -> None:
    """Write the IR in ``base`` with its weights compressed by NNCF at ``precision`` into ``out``."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(base / MODEL_XML))
    try:
        compressed = nncf.compress_weights(model, **_compression_arguments(precision, calibration))
    except (nncf.InvalidGroupSizeError, nncf.ParameterNotSupportedError, nncf.UnsupportedModelError) as exc:
        reason = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
        raise EvalbenchError(f"NNCF could not compress the weights at precision={precision.name}: {reason}") from exc
    out.mkdir(parents=True)
    ov.save_model(compressed, str(out / MODEL_XML), compress_to_fp16=False)
    for path in base.iterdir():  # the tokenizer, configs and the tokenizer IRs LLMPipeline reads
        if path.is_file() and not path.name.startswith(("openvino_model.", "evalbench_")):
            shutil.copy2(path, out / path.name)


def compressed_ir(
    base: Path, base_record: dict[str, Any], precision: Any, calibration: Any
) -> tuple[Path, dict[str, Any]]:
    """The IR at ``precision`` (compressed on first use) and its record; the float IR itself for a float one."""
    if not precision.compressed:
        return base, base_record
    versions = f"nncf {version('nncf')}, openvino {version('openvino')}"
    inputs = (base_record["source"], base_record["exporter"], versions, precision.compression(), calibration.key())
    target = base.parent / f"{base.name}-{precision.name}-{digest(*inputs)}"
    what = f"compressing {base.name} to {precision.name} with NNCF ({calibration.method} calibration)"
    record = {**base_record, "compression": precision.compression(), "compressor": versions}
    done = cached_folder(target, functools.partial(compress, base, precision, calibration), record, what)
    return target, {**done, "export_time_s": base_record["convert_time_s"]}
