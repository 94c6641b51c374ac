"""The machine-wide timing lock: a timed section waits while another process on the machine times."""

from __future__ import annotations

import subprocess
import sys

from evalbench.metrics.timing_lock import LOCK_ENV, timed_alone

HOLD = """
import sys, time
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(1.0)
    print(time.time(), flush=True)  # the last moment it holds the lock
"""


def test_a_section_waits_for_another_process_timing_and_records_its_window(tmp_path, monkeypatch):
    path = tmp_path / "timing.lock"
    monkeypatch.setenv(LOCK_ENV, str(path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"

    fields = timed_alone(lambda: {"decode_tokens_per_s": 1.0})
    last_held = float(holder.communicate(timeout=30)[0])
    assert fields["decode_tokens_per_s"] == 1.0 and fields["timing_lock_file"] == str(path)
    # It timed only after the other process let go, and says that it waited.
    assert last_held <= fields["timed_from"] <= fields["timed_until"] and fields["timing_lock_wait_s"] > 0
