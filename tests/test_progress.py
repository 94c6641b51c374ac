"""Progress a person can follow, and the time each step of a configuration took in its record."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
from conftest import FAST
from hydra import compose, initialize_config_dir
from test_chunked import FakeModel, _plan

from evalbench import progress
from evalbench.config import CONFIG_DIR, register_configs
from evalbench.quality import scoring
from evalbench.runner import run_configuration

LOG = logging.getLogger("evalbench.test")


def _messages(caplog, level: int = logging.INFO) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == level]


def test_progress_logs_at_most_every_interval_with_the_time_left(caplog, monkeypatch):
    clock = iter([0.0, 5.0, 12.0, 15.0, 15.0])  # start, after each of three parts, the end
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    caplog.set_level(logging.DEBUG, logger="evalbench")
    steps = progress.Progress("scoring window", [100, 100, 200], LOG, unit="tokens")
    for _ in range(3):
        steps.step()
    assert steps.finish() == 15.0
    # 5 s after the start: too soon; 12 s: half the tokens done, as long again to go; 15 s: 3 s after the last line
    assert _messages(caplog) == [
        "scoring window 2/3 (100 tokens, 12 s elapsed, about 12 s left)",
        "scoring window: 3/3 done in 15 s",
    ]


def test_a_quick_step_stays_quiet(caplog):
    caplog.set_level(logging.DEBUG, logger="evalbench")
    steps = progress.Progress("scoring window", [1, 1], LOG)
    steps.step()
    steps.step()
    steps.finish()
    assert _messages(caplog) == [] and _messages(caplog, logging.DEBUG)[0].startswith("scoring window: 2/2 done in")


def test_a_logged_step_says_its_start_and_end_with_seconds(caplog):
    caplog.set_level(logging.INFO, logger="evalbench")
    with progress.logged_step(LOG, "converting to int4"):
        pass
    with pytest.raises(ValueError), progress.logged_step(LOG, "quantizing to q4_k_m"):
        raise ValueError("no")
    with progress.logged_step(LOG, "pruning", enabled=False):
        pass
    lines = _messages(caplog)
    assert lines[0] == "converting to int4 ..." and re.fullmatch(r"converting to int4: done in \d\.\d s", lines[1])
    assert lines[2] == "quantizing to q4_k_m ..." and lines[3].startswith("quantizing to q4_k_m: failed after ")
    assert len(lines) == 4
    assert [progress.duration(s) for s in (4.24, 41.4, 750, 11_520)] == ["4.2 s", "41 s", "12.5 min", "3.2 h"]


def test_scoring_logs_its_windows(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="evalbench")
    scoring._score(FakeModel(0), _plan(), None, build=False)
    assert not _messages(caplog)  # under a second: quiet
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    scoring._score(FakeModel(0), _plan(), None, build=False)
    lines = _messages(caplog)
    assert len(lines) == 5 and lines[-1].startswith("scoring window: 4/4 done in ")
    for index, (line, tokens) in enumerate(zip(lines, [64, 64, 64, 56], strict=False), start=1):
        pattern = rf"scoring window {index}/4 \({tokens} tokens, [\d.]+ s elapsed, about [\d.]+ s left\)"
        assert re.fullmatch(pattern, line), line


def test_a_record_carries_the_time_each_step_took(tiny_model_dir, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="evalbench")
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    register_configs()
    overrides = ["model=hub", f"model.path={tiny_model_dir}", "model.name=tiny", f"results_dir={tmp_path / 'r'}",
                 *FAST, "precision=int8", "quality.tasks=[lambada_openai]", "quality.limit=2"]  # fmt: skip
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        record = run_configuration(compose("config", overrides=overrides))
    assert record["status"] == "ok", record["error"]
    steps = ("load_time_s", "convert_time_s", "load_step_time_s", "reference_time_s", "perplexity_time_s")
    for field in (*steps, "speed_time_s", "tasks_time_s"):
        assert record[field] > 0, field
    assert record["load_step_time_s"] >= record["load_time_s"] + record["convert_time_s"]  # it holds both
    assert record["duration_s"] > record["perplexity_time_s"] + record["speed_time_s"] + record["tasks_time_s"]
    lines = "\n".join(_messages(caplog))
    assert "loading tiny at torch int8 (converting unless cached) ..." in lines
    assert re.search(r"^converting to int8: done in [\d.]+ s$", lines, re.M)
    assert re.search(r"^building the stored reference with torch fp32: done in [\d.]+ s$", lines, re.M)
    assert re.search(r"^scoring window 1/3 \(128 tokens, [\d.]+ s elapsed, about [\d.]+ s left\)$", lines, re.M)
