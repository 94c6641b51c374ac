"""Errors evalbench reports to the user as one line, without a traceback."""

from __future__ import annotations

import re


class EvalbenchError(ValueError):
    """A bad input or an impossible configuration; the message names the bad value and what is valid."""


class PrecisionError(EvalbenchError):
    """A precision that cannot apply to this model or machine."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, its cause's first line appended (Hydra's errors span several)."""
    text = str(exc).split("Config search path")[0].strip()
    if exc.__cause__ is not None and str(exc.__cause__).strip():  # e.g. "Value 'abc' ... to Integer"
        text += "\n" + str(exc.__cause__).strip().splitlines()[0]
    text = re.sub(r":\s*\n\t", ": ", text)  # "Available options in 'precision':\n\tbf16"
    text = re.sub(r"\n\t", ", ", text)
    return re.sub(r"\s*\n\s*", "; ", text)


def innermost_evalbench_error(exc: BaseException) -> EvalbenchError | None:
    """The evalbench check's own error a chain of wrapping errors (Hydra's, OmegaConf's) carries, if any."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, EvalbenchError):
        cause = cause.__cause__ or cause.__context__
    return cause
