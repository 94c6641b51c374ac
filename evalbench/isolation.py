"""Process isolation: measure a configuration in a fresh process, so nothing of earlier runs counts.

``isolation=process`` spawns one process per configuration (the ``spawn`` start method: no
state inherited from the parent, not even the allocator's). The child measures and sends the
record back; the parent writes it. A child that dies (killed, out of memory, crashed), or that is
still running after ``timeout_s``, becomes a failed record naming how it ended; the sweep goes on.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

Measure = Callable[[DictConfig, dict[str, Any], Path], None]
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (a stopped sweep leaves no orphan timing)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux / glibc
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child(measure: Measure, container: dict[str, Any], record: dict[str, Any], results_dir: str, pipe) -> None:
    import logging

    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    measure(OmegaConf.create(container), record, Path(results_dir))
    pipe.send(record)
    pipe.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"the measuring process was killed by {name}{hint}"
    return f"the measuring process exited with status {exitcode} before sending its record"


def _timed_out(timeout_s: float) -> str:
    return (
        f"the measuring process was still running after timeout_s={timeout_s:g} seconds and was killed; "
        "raise timeout_s for a slower configuration"
    )


def measure_in_child(
    measure: Measure, cfg: DictConfig, record: dict[str, Any], results_dir: Path, timeout_s: float
) -> None:
    """Run ``measure(cfg, record, results_dir)`` in a fresh process and fill ``record`` from it.

    A child that sends nothing within ``timeout_s`` seconds is killed and recorded as failed.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    container["isolation"] = "none"  # the child measures in its own process
    child = context.Process(target=_child, args=(measure, container, record, str(results_dir), sender))
    child.start()
    sender.close()
    try:
        if receiver.poll(timeout_s):
            record.update(receiver.recv())
        else:
            child.kill()
            record.update(status="failed", error=_timed_out(timeout_s), error_type="TimedOut")
    except EOFError:  # the child died before sending
        child.join()
        record.update(status="failed", error=_death(child.exitcode), error_type="ProcessDied")
    finally:
        receiver.close()
    child.join()
