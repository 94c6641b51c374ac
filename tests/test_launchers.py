"""Sweeps through Hydra's launchers on the tiny Llama: submitit's local executor and a local Ray instance.

Each launcher runs the jobs of a sweep at the same time: records are written, the summary and exit
status are right, a failing configuration is recorded, a re-run skips what is recorded, and the
timed sections of the parallel jobs never overlap (the machine-wide timing lock).
"""

from __future__ import annotations

import pytest
from conftest import evalbench

from evalbench import load_results

SWEEP = ["-m", "precision=fp32,int8", "batch_size=1,0"]  # batch_size=0 fails inside its job


def _check_sweep(tiny_args: list[str], tmp_path, launcher: list[str]) -> None:
    first = evalbench(*SWEEP, *launcher, *tiny_args, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "4 configurations, 2 ok, 2 failed" in first.stdout, first.stdout + first.stderr
    frame = load_results(tmp_path / "results")
    assert sorted(frame.status) == ["failed", "failed", "ok", "ok"]
    assert (frame[frame.status == "failed"].batch_size == 0).all()
    assert frame[frame.status == "failed"].error.str.startswith("batch_size=0 is invalid").all()
    ok = frame[frame.status == "ok"].sort_values("timed_from")
    assert ok.measured_pid.nunique() == 2  # each job in a process of its own
    assert ok.timed_from.iloc[1] >= ok.timed_until.iloc[0]  # one at a time
    again = evalbench(*SWEEP, *launcher, *tiny_args, cwd=tmp_path)
    assert again.returncode == 1 and "2 ok (2 already recorded, skipped), 2 failed" in again.stdout, again.stdout
    assert len(load_results(tmp_path / "results")) == 6  # the failed ones measured again, the others not


def test_a_sweep_through_submitit_runs_jobs_in_parallel_without_sharing_timings(tiny_args, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _check_sweep(tiny_args, tmp_path, ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"])


def test_a_sweep_through_a_local_ray_instance(tiny_args, tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # null address: the launcher starts a local instance
    launcher = ["hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_cpus=1"]
    _check_sweep(tiny_args, tmp_path, launcher)


def test_the_slurm_launcher_off_a_cluster_or_without_cpus_is_one_line(tiny_args, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    unset = evalbench("-m", "hydra/launcher=slurm", "precision=fp32", *tiny_args, cwd=tmp_path)
    assert unset.returncode == 1 and "Traceback" not in unset.stderr, unset.stderr
    assert unset.stderr.strip().splitlines()[-1] == (
        "evalbench: error: hydra/launcher could not be set up: hydra.launcher.cpus_per_task must be given for "
        "this launcher; e.g. hydra.launcher.cpus_per_task=32"
    )
    out = evalbench("-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=2", "precision=fp32", *tiny_args,
                    cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        'evalbench: error: hydra/launcher could not run the jobs: RuntimeError: Could not detect "srun", '
        "are you indeed on a slurm cluster?"
    )


def _launcher(launcher: str, *overrides: str) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from evalbench.config import CONFIG_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}", *overrides], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True, throw_on_missing=True)


def test_the_slurm_config_needs_cpus_per_task_and_composes_on_submitits_schema():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from omegaconf.errors import InterpolationResolutionError

    with pytest.raises(InterpolationResolutionError, match=r"hydra\.launcher\.cpus_per_task must be given"):
        _launcher("slurm")  # Slurm would bind the job step to one CPU: no default is safe
    assert _launcher("slurm", "hydra.launcher.cpus_per_task=16")["_target_"].endswith("SlurmLauncher")


def test_the_ray_config_reads_the_clusters_address_from_the_environment(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert _launcher("ray_cluster")["ray"]["init"]["address"] == "ray://head:10001"
    monkeypatch.delenv("RAY_ADDRESS")
    assert _launcher("ray_cluster")["ray"]["init"]["address"] is None  # a local instance
