"""One timed section at a time on a machine: a lock every evalbench process on it shares.

Two sweeps on one machine, a local launcher running jobs in parallel, or two Slurm jobs on one
node would otherwise time at once, and both sets of numbers would be contended. The lock is a
file in the machine's temporary folder (node-local on a cluster), held only around timed
sections, so quality scoring still runs in parallel. The record says how long the run waited
for it and the wall-clock window it timed in.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

LOCK_ENV = "EVALBENCH_TIMING_LOCK"  # another path for the lock file (it must be local to the machine)


def lock_path() -> Path:
    return Path(os.environ.get(LOCK_ENV) or Path(tempfile.gettempdir(), "evalbench-timing.lock"))


@contextmanager
def machine_timing_lock(fields: dict[str, Any]) -> Iterator[None]:
    """Hold the machine's timing lock; record the wait and the window held into ``fields``."""
    path = lock_path()
    asked = time.perf_counter()
    with FileLock(str(path)):
        fields.update(timing_lock_file=str(path), timing_lock_wait_s=time.perf_counter() - asked)
        fields["timed_from"] = time.time()
        try:
            yield
        finally:
            fields["timed_until"] = time.time()


def timed_alone(time_section: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``time_section``'s fields, measured while no other evalbench process on this machine times."""
    held: dict[str, Any] = {}
    with machine_timing_lock(held):
        fields = time_section()
    return {**fields, **held}
