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


def test_the_slurm_launcher_off_a_cluster_is_one_line(tiny_args, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = evalbench("-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=2", "precision=fp32", *tiny_args,
                    cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        'evalbench: error: hydra/launcher could not run the jobs: RuntimeError: Could not detect "srun", '
        "are you indeed on a slurm cluster?"
    )


@pytest.mark.parametrize(
    ("launcher", "target", "settings"),
    [
        ("slurm", "SlurmLauncher", {"additional_parameters": {"exclusive": True}, "cpus_per_task": 16}),
        ("ray_cluster", "RayLauncher", {"ray": {"init": {"address": None}, "remote": {"num_cpus": 2}}}),
    ],
)
def test_shipped_launcher_configs_compose_on_the_plugins_schemas(launcher, target, settings, monkeypatch):
    pytest.importorskip(f"hydra_plugins.hydra_{'submitit' if launcher == 'slurm' else 'ray'}_launcher")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from evalbench.config import CONFIG_DIR, register_configs

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    register_configs()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        overrides = [f"hydra/launcher={launcher}", "hydra.launcher.cpus_per_task=16"] if launcher == "slurm" else []
        cfg = compose("config", overrides=overrides or [f"hydra/launcher={launcher}"], return_hydra_config=True)
    chosen = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert chosen["_target_"].endswith(target)
    assert {key: chosen[key] for key in settings} == settings
