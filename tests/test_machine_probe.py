"""Slow spells: the machine probe around each timed section, with injected probe readings."""

from __future__ import annotations

import math

import pytest

from evalbench.metrics.machine_probe import ProbeReference, ProbeSettings, probe_seconds, timed_with_probe


def scripted(readings: list[float]):
    """A probe returning ``readings`` in turn (seconds of the fixed workload), then the last one forever."""
    calls = []

    def probe() -> float:
        calls.append(readings[min(len(calls), len(readings) - 1)])
        return calls[-1]

    return probe, calls


def timings():
    """A timed section whose n-th call reports n decode tokens/s."""
    sections = []

    def section() -> dict:
        sections.append(len(sections) + 1)
        return {"decode_tokens_per_s": float(sections[-1]), "speed_warnings": []}

    return section, sections


def test_a_slow_spell_after_the_timed_section_is_timed_again_once_the_machine_recovers(tmp_path):
    reference = ProbeReference(tmp_path, "box", threads=2)
    reference.update(0.10)
    # before: normal; after: 2.5x slower; while waiting: slow once, then recovered; second section: normal.
    probe, calls = scripted([0.10, 0.25, 0.25, 0.10, 0.10, 0.11])
    section, sections = timings()
    fields = timed_with_probe(section, probe, reference, ProbeSettings(max_slowdown=1.2, retimes=2, wait_s=30))
    assert sections == [1, 2] and fields["decode_tokens_per_s"] == 2.0  # the figures of the second timing
    assert fields["machine_probe_slowdowns"] == pytest.approx([2.5, 1.1])
    assert fields["machine_probe_retimes"] == 1 and fields["machine_probe_slowdown"] == pytest.approx(1.1)
    assert fields["machine_probe_reference_s"] == 0.10 and fields["machine_probe_after_s"] == 0.11
    [warning] = fields["speed_warnings"]
    assert warning == "timed again: the machine probe showed a slow spell (2.50x slower than its best)"
    assert len(calls) == 6


def test_a_machine_slow_throughout_spends_the_budget_and_says_the_timings_are_contended(tmp_path):
    reference = ProbeReference(tmp_path, "box", threads=1)
    reference.update(0.10)
    probe, _ = scripted([0.30])
    section, sections = timings()
    fields = timed_with_probe(section, probe, reference, ProbeSettings(max_slowdown=1.2, retimes=2, wait_s=0.01))
    assert sections == [1, 2, 3] and fields["machine_probe_retimes"] == 2
    assert fields["machine_probe_slowdown"] == pytest.approx(3.0) and fields["machine_probe_waited_s"] > 0
    assert "3.00x slower than its best" in fields["speed_warnings"][0] and "contended" in fields["speed_warnings"][0]


def test_the_first_probe_sets_the_reference_and_a_faster_one_lowers_it(tmp_path):
    probe, _ = scripted([0.12, 0.10, 0.11, 0.10, 0.09])  # three for the first reference, then before/after
    section, sections = timings()
    fields = timed_with_probe(section, probe, ProbeReference(tmp_path, "box", 1), ProbeSettings())
    assert sections == [1] and fields["machine_probe_retimes"] == 0 and fields["speed_warnings"] == []
    assert fields["machine_probe_reference_s"] == 0.09  # the fastest reading, kept for the next configuration
    assert ProbeReference(tmp_path, "box", 1).seconds() == 0.09 and ProbeReference(tmp_path, "box", 2).seconds() is None


def test_the_real_probe_runs_at_the_asked_threads_and_leaves_the_runs_threads_alone():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert math.isfinite(probe_seconds(1)) and probe_seconds(1) > 0
        assert torch.get_num_threads() == 2  # the timed run's own thread count is restored
    finally:
        torch.set_num_threads(before)
