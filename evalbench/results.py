"""One JSON record per configuration run, written atomically; :func:`load_results` reads them back.

Each record goes to its own uniquely named file, written to a temporary file in the
same folder, flushed to disk and renamed into place: a crash or Ctrl-C leaves either
the whole record or none, and sweeps writing to one folder at once never collide.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

RECORDS_SUBDIR = "records"

# Columns every results table has, in this order, even when every run failed.
CORE_COLUMNS = (
    "model backend precision threads batch_size perplexity bits_per_byte word_perplexity eval_tokens "
    "prefill_tokens_per_s decode_tokens_per_s ttft_s peak_rss_bytes weight_bytes status error"
).split()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def writable_folder(folder: Path, key: str, value: str | Path) -> Path:
    """Create ``folder`` and prove a file can be written there, or raise one line naming ``key=value``."""
    from evalbench.errors import EvalbenchError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise EvalbenchError(
            f"{key}={str(value)!r} is not writable ({exc.strerror or exc}); valid: a folder you can write to"
        ) from exc
    return folder


def ensure_writable(results_dir: str | Path) -> Path:
    """Create ``<results_dir>/records`` and prove a file can be written there, or raise one clear line."""
    return writable_folder(Path(results_dir) / RECORDS_SUBDIR, "results_dir", results_dir)


def write_record(results_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as ``<results_dir>/records/<run_id>.json`` atomically and return its path."""
    folder = Path(results_dir) / RECORDS_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{record['run_id']}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(_json_safe(record), handle, indent=2, sort_keys=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_record(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """The record ``<results_dir>/records/<run_id>.json`` (with ``record_file``); None when absent or unreadable."""
    path = Path(results_dir) / RECORDS_SUBDIR / f"{run_id}.json"
    if not path.is_file():
        return None
    try:
        return {**json.loads(path.read_text(encoding="utf-8")), "record_file": str(path)}
    except (OSError, ValueError, TypeError) as exc:
        warnings.warn(f"ignoring unreadable record {path}: {exc}", stacklevel=2)
        return None


def read_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every readable record under ``results_dir``; an unreadable file is reported with a warning."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"results_dir={str(results_dir)!r} does not exist")
    records = []
    for path in sorted((folder / RECORDS_SUBDIR).glob("[!.]*.json")):  # not the temporary files of a write
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            warnings.warn(f"skipping unreadable record {path}: {exc}", stacklevel=2)
            continue
        record["record_file"] = str(path)
        records.append(_with_hardware_id(record))
    return records


def _with_hardware_id(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with today's ``env.machine_id``, the hash of its hardware fields.

    Records written before it named the hardware alone (their id hashed the host name too) are
    given it, so they resume and group with the same hardware's new records; the id they were
    written with stays as ``env.recorded_machine_id``.
    """
    from evalbench.environment import machine_id

    env = record.get("env")
    current = machine_id(env) if isinstance(env, dict) else None
    if current is not None and env.get("machine_id") != current:
        env["recorded_machine_id"] = env.get("machine_id")
        env["machine_id"] = current
    return record


def find_recorded(results_dir: str | Path, config_key: str, machine_id: str) -> dict[str, Any] | None:
    """A successful record of the same resolved configuration on the same machine, if there is one."""
    if not Path(results_dir).is_dir():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_results reports unreadable files; a lookup need not repeat it
        records = read_records(results_dir)
    for record in records:
        if (
            record.get("status") == "ok"
            and record.get("config_key") == config_key
            and record.get("env", {}).get("machine_id") == machine_id
        ):
            return record
    return None


def load_results(results_dir: str | Path = "results"):
    """One row per configuration run: metrics, ``config.*`` (resolved config) and ``env.*`` (machine) columns."""
    import pandas as pd

    records = read_records(results_dir)
    frame = pd.json_normalize(records, sep=".") if records else pd.DataFrame()
    extra = [c for c in frame.columns if c not in CORE_COLUMNS]
    return frame.reindex(columns=CORE_COLUMNS + extra)
