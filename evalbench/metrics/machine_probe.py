"""Slow spells on a shared machine: a short fixed probe before and after each timed section.

A coefficient of variation within one configuration cannot see a neighbour that slows the
whole machine for a minute: every repeat is slow alike. A fixed workload (a float32 matmul
and a read of a buffer larger than the L2 caches, the median of 7 rounds: about 0.2 s) is timed
before and after the timed section and compared with the fastest time this machine has ever
shown for it (kept per machine and thread count in ``<cache_dir>/machine_probe/``). When the
machine was measurably slower, the section is timed again once the probe has recovered,
within a budget, and the record says what happened (``machine_probe_*`` fields, a warning).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evalbench.results import read_record, write_record

MATMUL_SIZE = 384
MATMULS = 16
READ_BYTES = 64 << 20
ROUNDS = 7
PROBE_VERSION = 2  # references of another workload are not compared with


def probe_seconds(threads: int) -> float:
    """Seconds of the fixed workload at ``threads`` threads: the median of a few rounds.

    The median, not the fastest: a neighbour taking one of two cores slows most rounds of a
    two-thread workload, yet leaves the odd round fast.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.ones(MATMUL_SIZE, MATMUL_SIZE)
        buffer = torch.ones(READ_BYTES // 4)
        rounds = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(MATMULS):
                a @ a
            buffer.sum()
            rounds.append(time.perf_counter() - started)
        return statistics.median(rounds)
    finally:
        torch.set_num_threads(previous)


class ProbeReference:
    """The fastest probe time seen on one machine at one thread count, kept on disk and lowered when beaten."""

    def __init__(self, cache_dir: str | Path, machine_id: str, threads: int) -> None:
        self.folder = Path(cache_dir).expanduser() / "machine_probe"
        self.name = f"{machine_id}-t{threads}-v{PROBE_VERSION}"
        self.threads = threads

    def seconds(self) -> float | None:
        stored = read_record(self.folder, self.name)
        return None if stored is None else float(stored["seconds"])

    def update(self, seconds: float) -> float:
        """Keep ``seconds`` when faster than the stored figure; return the reference."""
        stored = self.seconds()
        if stored is not None and stored <= seconds:
            return stored
        write_record(self.folder, {"run_id": self.name, "seconds": seconds, "threads": self.threads})
        return seconds


Probe = Callable[[], float]  # seconds of the fixed workload now


@dataclass(frozen=True)
class ProbeSettings:
    """``speed.machine_probe_*``: how much slower counts as a slow spell, and the re-timing budget."""

    max_slowdown: float = 1.2
    retimes: int = 2
    wait_s: float = 60.0

    @classmethod
    def of(cls, speed: Any) -> ProbeSettings:
        """From the ``speed`` config group."""
        return cls(speed.machine_probe_max_slowdown, speed.machine_probe_retimes, speed.machine_probe_wait_s)


def _wait_for_recovery(probe: Probe, reference: float, settings: ProbeSettings) -> float:
    """Probe until the machine is back within ``max_slowdown`` of its reference or ``wait_s`` passed."""
    started = time.monotonic()
    while time.monotonic() - started < settings.wait_s and probe() / reference > settings.max_slowdown:
        time.sleep(0.5)
    return time.monotonic() - started


def timed_with_probe(
    time_section: Callable[[], dict[str, Any]], probe: Probe, reference: ProbeReference, settings: ProbeSettings
) -> dict[str, Any]:
    """Run ``time_section`` between two probes; re-time it while the machine was slower than its reference."""
    best = reference.seconds()
    if best is None:  # first probe on this machine: the best of a few is the reference
        best = min(probe() for _ in range(3))
    waited, slowdowns = 0.0, []
    for attempt in range(settings.retimes + 1):
        before = probe()
        fields = time_section()
        after = probe()
        best = reference.update(min(before, after, best))
        slowdowns.append(max(before, after) / best)
        if slowdowns[-1] <= settings.max_slowdown or attempt == settings.retimes:
            break
        waited += _wait_for_recovery(probe, best, settings)
    fields.update(
        machine_probe_reference_s=best,
        machine_probe_before_s=before,
        machine_probe_after_s=after,
        machine_probe_slowdown=slowdowns[-1],
        machine_probe_slowdowns=slowdowns,
        machine_probe_retimes=len(slowdowns) - 1,
        machine_probe_waited_s=waited,
    )
    fields.setdefault("speed_warnings", []).extend(_warnings(slowdowns, settings))
    return fields


def _warnings(slowdowns: list[float], settings: ProbeSettings) -> list[str]:
    if slowdowns[-1] > settings.max_slowdown:
        return [
            f"the machine was {slowdowns[-1]:.2f}x slower than its best (machine probe) while this was timed, "
            f"still after {len(slowdowns) - 1} re-timing(s): treat these timings as contended"
        ]
    if len(slowdowns) > 1:
        spells = ", ".join(f"{s:.2f}x" for s in slowdowns[:-1])
        return [f"timed again: the machine probe showed a slow spell ({spells} slower than its best)"]
    return []
