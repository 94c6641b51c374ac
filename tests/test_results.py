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


HARDWARE = {
    "cpu_model": "AMD EPYC",
    "cpu_isa": "avx avx2 f16c fma sse4_2",
    "cpu_arch": "x86_64",
    "logical_cores": 2,
    "physical_cores": 2,
    "memory_bytes": 24 * 2**30 - 40 * 2**20,
}


def test_a_machine_is_its_hardware_not_its_host_name():
    from evalbench.environment import fingerprint, machine_id

    node_a, node_b = {**HARDWARE, "hostname": "node-a"}, {**HARDWARE, "hostname": "node-b"}
    assert machine_id(node_a) == machine_id(node_b)
    assert machine_id({**node_a, "memory_bytes": 24 * 2**30 + 30 * 2**20}) == machine_id(node_a)  # firmware's few MB
    assert machine_id({**node_a, "physical_cores": 1}) != machine_id(node_a)
    assert machine_id({**node_a, "memory_bytes": 48 * 2**30}) != machine_id(node_a)
    assert machine_id({**node_a, "cpu_isa": "avx avx2 avx512f"}) != machine_id(node_a)
    env = fingerprint()
    assert env["hostname"] and env["machine_id"] == machine_id({**env, "hostname": "elsewhere"})


def test_records_of_older_machine_ids_load_resume_and_group_with_the_same_hardware(tmp_path):
    from evalbench.environment import machine_id
    from evalbench.results import find_recorded

    old = {"machine_id": "0123456789ab", **HARDWARE, "hostname": "node-a"}  # an id that hashed the host name too
    write_record(tmp_path, _record("old", config_key="k", env=old))
    write_record(tmp_path, _record("new", env={"machine_id": machine_id(HARDWARE), **HARDWARE, "hostname": "node-b"}))
    write_record(tmp_path, _record("bare"))  # an env without the hardware fields keeps its id
    frame = load_results(tmp_path).set_index("run_id")
    assert frame.loc["old", "env.machine_id"] == frame.loc["new", "env.machine_id"] == machine_id(HARDWARE)
    assert frame.loc["old", "env.recorded_machine_id"] == "0123456789ab" and frame.loc["bare", "env.machine_id"] == "x"
    assert find_recorded(tmp_path, "k", machine_id({**HARDWARE, "hostname": "node-c"}))["run_id"] == "old"
