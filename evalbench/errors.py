"""Errors evalbench reports to the user as one line, without a traceback."""


class EvalbenchError(ValueError):
    """A bad input or an impossible configuration; the message names the bad value and what is valid."""


class PrecisionError(EvalbenchError):
    """A precision that cannot apply to this model or machine."""
