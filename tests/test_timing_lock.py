"""The machine-wide timing lock: two processes' timed sections never overlap, and the one that waited says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from evalbench.metrics.timing_lock import LOCK_ENV

TIMED = """
import json, sys, time
from evalbench.metrics.timing_lock import timed_alone

def section():
    entered = time.time()
    print("in", flush=True)
    sys.stdin.readline()  # timing until the test says go
    return {"entered": entered, "left": time.time()}

print("asking", flush=True)
print(json.dumps(timed_alone(section)), flush=True)
"""


def _start(env: dict[str, str]) -> subprocess.Popen:
    timed = subprocess.Popen(
        [sys.executable, "-c", TIMED], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert timed.stdout.readline() == "asking\n"
    return timed


def test_a_second_process_times_only_after_the_first_and_records_its_wait(tmp_path):
    env = {**os.environ, LOCK_ENV: str(tmp_path / "timing.lock")}  # not the machine's: other runs may hold it
    first_process = _start(env)
    assert first_process.stdout.readline() == "in\n"
    second_process = _start(env)
    time.sleep(0.5)  # the second is asking for the lock while the first still times
    first = json.loads(first_process.communicate("go\n", timeout=60)[0])
    second = json.loads(second_process.communicate("go\n", timeout=60)[0].removeprefix("in\n"))
    for fields in (first, second):  # the recorded window covers the timed section
        assert fields["timed_from"] <= fields["entered"] <= fields["left"] <= fields["timed_until"]
    assert first["timed_until"] <= second["timed_from"] and first["left"] <= second["entered"]
    # The second's wait reaches back to before the first let go: it counts the time spent waiting for it.
    assert second["timed_from"] - second["timing_lock_wait_s"] < first["left"]
