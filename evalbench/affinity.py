"""Threads bound to physical cores (``affinity=cores``): the measuring process kept on ``threads`` distinct cores.

Every thread of the process, existing and future (the runtimes' thread pools included), gets
the same CPU mask: one logical CPU on each of ``threads`` physical cores, so no two of its
threads share a core's SMT siblings and the OS does not move them onto other cores. The
mask is restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from evalbench.errors import EvalbenchError

AFFINITIES = ("none", "cores")
_CPU = Path("/sys/devices/system/cpu")


def physical_cores() -> list[list[int]]:
    """The logical CPUs this process may use, grouped by physical core (package, core id), in CPU order."""
    cores: dict[tuple[str, str], list[int]] = {}
    for cpu in sorted(os.sched_getaffinity(0)):
        topology = _CPU / f"cpu{cpu}" / "topology"
        try:
            key = ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
        except OSError:
            key = ("?", str(cpu))  # no topology exposed: every CPU its own core
        cores.setdefault(key, []).append(cpu)
    return list(cores.values())


def core_cpus(threads: int) -> list[int]:
    """One logical CPU on each of the first ``threads`` physical cores; one line when there are fewer cores."""
    cores = physical_cores()
    if threads > len(cores):
        raise EvalbenchError(
            f"affinity=cores with threads={threads}: this machine offers {len(cores)} physical cores; "
            f"valid: threads <= {len(cores)}, or affinity=none"
        )
    return [core[0] for core in cores[:threads]]


def _set_process_mask(cpus: set[int]) -> None:
    """Give every thread of this process the mask ``cpus`` (``sched_setaffinity`` is per thread on Linux)."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that has just exited
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def bound(affinity: str, threads: int) -> Iterator[dict[str, object]]:
    """Run the block with the process bound as ``affinity`` says; yields the record fields."""
    if affinity == "none":
        yield {"affinity": "none"}
        return
    cpus = core_cpus(threads)
    previous = os.sched_getaffinity(0)
    _set_process_mask(set(cpus))
    try:
        yield {"affinity": affinity, "affinity_cpus": cpus}
    finally:
        _set_process_mask(previous)
