"""The machine-wide timing lock: a timed section waits while another process on the machine times."""

from __future__ import annotations

import subprocess
import sys
import time

from evalbench.metrics.timing_lock import LOCK_ENV, timed_alone

HOLD = """
import sys, time
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_section_waits_for_another_process_timing_and_records_its_window(tmp_path, monkeypatch):
    path = tmp_path / "timing.lock"
    monkeypatch.setenv(LOCK_ENV, str(path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "1.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    released = time.time() + 1.5

    fields = timed_alone(lambda: {"decode_tokens_per_s": 1.0})
    holder.wait(timeout=30)
    assert fields["decode_tokens_per_s"] == 1.0 and fields["timing_lock_file"] == str(path)
    assert fields["timing_lock_wait_s"] > 0.5  # it waited for the other process
    assert fields["timed_from"] >= released - 1.0 and fields["timed_until"] >= fields["timed_from"]
    free = timed_alone(lambda: {})
    assert free["timing_lock_wait_s"] < 0.5  # nobody else timing: no wait
