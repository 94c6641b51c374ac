"""Progress a person can follow through the long steps of a big model, at INFO level through Python logging.

Work in many parts (scoring windows) logs ``scoring window 3/12 (1024 tokens, 41 s elapsed,
about 2.0 min left)`` at most once every :data:`INTERVAL_S` seconds, so a step done sooner
stays quiet; a step in one piece (a conversion, a quantization) logs its start and its end
with the time it took.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

INTERVAL_S = 10.0  # the least time between two progress lines of one step


def duration(seconds: float) -> str:
    """``4.2 s``, ``41 s``, ``12.5 min`` or ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class Progress:
    """Logs the parts of a step done so far, with the time left estimated from the parts' ``weights``."""

    def __init__(self, what: str, weights: Sequence[float], logger: logging.Logger, unit: str = "") -> None:
        self.what, self.weights, self.logger, self.unit = what, list(weights), logger, unit
        self.total, self.done, self.count, self.logged = float(sum(self.weights)), 0.0, 0, False
        self.started = self.last = time.monotonic()

    def step(self) -> None:
        """The next part is done: log it when the last line is old enough."""
        weight = self.weights[self.count]
        self.done += weight
        self.count += 1
        now = time.monotonic()
        if now - self.last < INTERVAL_S:
            return
        self.last, self.logged = now, True
        elapsed = now - self.started
        left = elapsed * (self.total - self.done) / self.done if self.done else 0.0
        detail = f"{weight:g} {self.unit}".strip()
        self.logger.info(
            "%s %d/%d (%s, %s elapsed, about %s left)",
            self.what, self.count, len(self.weights), detail, duration(elapsed), duration(left),
        )  # fmt: skip

    def finish(self) -> float:
        """Log the end (at INFO when progress was logged, else at DEBUG); return the seconds the step took."""
        elapsed = time.monotonic() - self.started
        level = logging.INFO if self.logged else logging.DEBUG
        self.logger.log(level, "%s: %d/%d done in %s", self.what, self.count, len(self.weights), duration(elapsed))
        return elapsed


@contextmanager
def logged_step(logger: logging.Logger, what: str, enabled: bool = True) -> Iterator[None]:
    """Log ``what ...`` when the block starts and ``what: done in 12 s`` (or ``failed after``) when it ends."""
    if not enabled:
        yield
        return
    logger.info("%s ...", what)
    started = time.monotonic()
    try:
        yield
    except BaseException:
        logger.info("%s: failed after %s", what, duration(time.monotonic() - started))
        raise
    logger.info("%s: done in %s", what, duration(time.monotonic() - started))
