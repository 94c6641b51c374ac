"""Re-running a sweep skips what is recorded; a sweep killed mid-run loses only that run; sweeps can share a folder."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from conftest import evalbench

from evalbench import load_results


def _records(results: Path) -> list[Path]:
    folder = results / "records"
    return sorted(folder.glob("[!.]*.json")) if folder.is_dir() else []


def _load_cleanly(results: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unreadable (truncated) record would warn
        return load_results(results)


def test_every_shipped_precision_has_its_own_key_and_moving_a_class_keeps_it():
    """Keys tell every precision apart (bf16's file differs from fp32's by its class alone), and a precision
    class moved to another module keeps the key of the runs recorded before."""
    from hydra import compose, initialize_config_dir

    from evalbench.config import CONFIG_DIR, register_configs
    from evalbench.runner import config_key

    register_configs()
    names = sorted(p.stem for p in (CONFIG_DIR / "precision").glob("*.yaml"))
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        configs = {name: compose("config", overrides=[f"precision={name}"]) for name in names}
    assert len({config_key(cfg) for cfg in configs.values()}) == len(names) > 15
    moved = configs["bf16"].copy()
    moved.precision._target_ = "somewhere.else.BF16"
    assert config_key(moved) == config_key(configs["bf16"])


def test_rerun_skips_recorded_configurations_and_force_measures_again(tiny_args, tmp_path):
    sweep = ["-m", "precision=fp32,int8", *tiny_args]
    assert evalbench(*sweep, cwd=tmp_path).returncode == 0
    again = evalbench(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 configurations, 2 ok (2 already recorded, skipped), 0 failed" in again.stdout
    assert again.stdout.count("[skipped] tiny") == 2
    assert len(_records(tmp_path / "results")) == 2
    changed = evalbench(*sweep, "speed.new_tokens=5", cwd=tmp_path)  # another resolved config: measured
    assert "(2 already recorded" not in changed.stdout and len(_records(tmp_path / "results")) == 4
    forced = evalbench(*sweep, "force=true", cwd=tmp_path)
    assert forced.returncode == 0 and len(_records(tmp_path / "results")) == 6


def test_failed_configurations_are_measured_again(tiny_args, tmp_path):
    assert evalbench("precision=int4", "precision.group_size=48", *tiny_args, cwd=tmp_path).returncode == 1
    assert evalbench("precision=int4", "precision.group_size=48", *tiny_args, cwd=tmp_path).returncode == 1
    assert (_load_cleanly(tmp_path / "results").status == "failed").sum() == 2


def test_sweep_killed_mid_configuration_loses_only_it_and_resumes(tiny_args, tmp_path):
    results = tmp_path / "results"
    args = ["-m", "precision=fp32,int8,int4", "batch_size=1,2", *tiny_args, "perplexity.max_tokens=2000"]
    command = [sys.executable, "-m", "evalbench", *args]
    sweep = subprocess.Popen(
        command, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while len(_records(results)) < 2 and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.02)
        time.sleep(0.5)  # well into the third configuration (each takes seconds)
        os.killpg(sweep.pid, signal.SIGKILL)
    finally:
        sweep.wait(timeout=60)
    assert sweep.returncode == -signal.SIGKILL
    before = _load_cleanly(results)
    assert 2 <= len(before) < 6 and (before.status == "ok").all()

    resumed = evalbench(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"6 configurations, 6 ok ({len(before)} already recorded, skipped)" in resumed.stdout
    after = _load_cleanly(results)
    assert len(after) == 6 and (after.status == "ok").all()
    assert after.config_key.nunique() == 6  # no configuration twice
    assert set(before.run_id) <= set(after.run_id)  # what was done before the kill is kept as it was


def test_two_sweeps_writing_to_one_folder_at_once_lose_nothing(tiny_args, tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    sweeps = [
        subprocess.Popen(
            [sys.executable, "-m", "evalbench", "-m", "precision=fp32,int8,int4", f"threads={threads}", *tiny_args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for threads in (1, 2)
    ]
    outputs = [sweep.communicate(timeout=600) for sweep in sweeps]
    assert [sweep.returncode for sweep in sweeps] == [0, 0], outputs
    frame = _load_cleanly(tmp_path / "results")
    assert len(frame) == 6 and (frame.status == "ok").all()
    assert sorted(zip(frame.precision, frame.threads, strict=True)) == sorted(
        (p, t) for p in ("fp32", "int8", "int4") for t in (1, 2)
    )
    # The two sweeps timed one at a time: no two timed windows overlap, whoever waited for whom.
    windows = sorted(zip(frame.timed_from, frame.timed_until, strict=True))
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(windows))
    assert frame.timing_lock_file.nunique() == 1
    # Each run's recorded wait for the lock lies within the run: it asked for the lock after it started.
    started = frame.started_at.map(lambda stamp: dt.datetime.fromisoformat(stamp).timestamp())
    assert (started <= frame.timed_from - frame.timing_lock_wait_s).all()
