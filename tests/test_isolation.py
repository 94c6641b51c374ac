"""Each configuration in a fresh process, or in-process with the converted model reused; deaths are recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
from conftest import evalbench

from evalbench import load_results


def test_process_isolation_measures_each_configuration_in_its_own_process(tiny_args, tmp_path):
    out = evalbench("-m", "precision=fp32,int8", *tiny_args, "isolation=process", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    frame = load_results(tmp_path / "results")
    assert (frame.status == "ok").all() and (frame.perplexity > 0).all() and (frame.decode_tokens_per_s > 0).all()
    assert frame.sweep_pid.nunique() == 1 and frame.measured_pid.nunique() == 2  # one fresh process each
    assert not frame.measured_pid.isin(frame.sweep_pid).any()  # none measured in the sweep's own process


def test_in_process_sweeps_reuse_the_converted_model_across_threads_and_batch_sizes(tiny_args, tmp_path):
    out = evalbench("-m", "precision=int8,int4", "threads=1,2", "isolation=none", *tiny_args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    frame = load_results(tmp_path / "results").sort_values("started_at")
    assert (frame.measured_pid == frame.sweep_pid).all() and frame.sweep_pid.nunique() == 1
    for _, runs in frame.groupby("precision"):
        assert runs.model_reused.tolist() == [False, True]  # loaded and converted once per precision
        assert runs.convert_time_s.nunique() == 1  # the reusing run reports the conversion it reused
    assert frame.weight_bytes.groupby(frame.precision).nunique().eq(1).all()


def _measuring_child(sweep: subprocess.Popen) -> psutil.Process:
    """The sweep's spawned measuring process, once it exists."""
    parent, child = psutil.Process(sweep.pid), None
    deadline = time.monotonic() + 120
    while child is None and time.monotonic() < deadline:
        spawned = [c for c in parent.children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
        child = spawned[0] if spawned else None
        time.sleep(0.05)
    assert child is not None, "no measuring process was spawned"
    time.sleep(1.0)  # let it get into its measurement
    return child


def test_a_killed_configuration_becomes_a_failed_record_and_the_sweep_goes_on(tiny_args, tmp_path):
    command = [sys.executable, "-m", "evalbench", "-m", "precision=fp32,int8", *tiny_args, "isolation=process"]
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.kill(_measuring_child(sweep).pid, 9)
    stdout, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 1, stdout + stderr
    assert "2 configurations, 1 ok, 1 failed" in stdout
    frame = load_results(tmp_path / "results").set_index("precision")
    assert frame.loc["fp32", "status"] == "failed" and frame.loc["fp32", "error_type"] == "ProcessDied"
    assert "killed by SIGKILL" in frame.loc["fp32", "error"]
    assert frame.loc["int8", "status"] == "ok"


def test_a_stopped_sweep_leaves_no_measuring_process_behind(tiny_args, tmp_path):
    command = [sys.executable, "-m", "evalbench", "-m", "precision=fp32,int8", *tiny_args, "isolation=process"]
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = _measuring_child(sweep)
    sweep.kill()  # SIGKILL: the sweep cannot clean up after itself
    sweep.communicate(timeout=60)
    _, alive = psutil.wait_procs([child], timeout=30)
    assert not alive, "the measuring process outlived its sweep"
