"""Records are written atomically and read back into one table; bad files are reported, not hidden."""

from __future__ import annotations

import json
import multiprocessing
import os
import warnings

import pytest

from evalbench import load_results
from evalbench.results import CORE_COLUMNS, write_record


def _record(run_id: str, **extra) -> dict:
    return {
        "run_id": run_id,
        "status": "ok",
        "error": None,
        "model": "m",
        "precision": "fp32",
        "threads": 1,
        "batch_size": 1,
        "perplexity": 10.0,
        "config": {"model": {"name": "m"}},
        "env": {"machine_id": "x"},
        **extra,
    }


def test_records_round_trip_into_a_table(tmp_path):
    write_record(tmp_path, _record("a", decode_tokens_per_s=3.5))
    write_record(tmp_path, _record("b", perplexity=float("nan")))
    frame = load_results(tmp_path)
    assert list(frame.columns[: len(CORE_COLUMNS)]) == CORE_COLUMNS
    assert len(frame) == 2 and {"config.model.name", "env.machine_id", "run_id"} <= set(frame.columns)
    assert frame.set_index("run_id").loc["a", "decode_tokens_per_s"] == 3.5
    assert frame.set_index("run_id")["perplexity"].isna().loc["b"]


def test_no_temporary_file_is_left(tmp_path):
    write_record(tmp_path, _record("a"))
    assert [p.name for p in (tmp_path / "records").iterdir()] == ["a.json"]


def test_corrupt_record_is_reported_and_skipped(tmp_path):
    write_record(tmp_path, _record("good"))
    (tmp_path / "records" / "truncated.json").write_text('{"run_id": "trunc')
    with pytest.warns(UserWarning, match="truncated.json"):
        frame = load_results(tmp_path)
    assert frame["run_id"].tolist() == ["good"]


def test_an_interrupted_write_is_not_a_record(tmp_path):
    write_record(tmp_path, _record("good"))
    (tmp_path / "records" / ".tmp-abc123.json").write_text('{"run_id": "half')  # a write killed before its rename
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_results(tmp_path)["run_id"].tolist() == ["good"]


def test_empty_and_missing_folders(tmp_path):
    frame = load_results(tmp_path)
    assert frame.empty and list(frame.columns) == CORE_COLUMNS
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nope")


def _write_many(folder: str, prefix: str) -> None:
    for i in range(50):
        write_record(folder, _record(f"{prefix}-{i}", payload="x" * 10_000))


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    writers = [ctx.Process(target=_write_many, args=(str(tmp_path), f"w{n}")) for n in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    files = list((tmp_path / "records").glob("*.json"))
    assert len(files) == 200
    assert all(json.loads(f.read_text())["payload"] == "x" * 10_000 for f in files)
