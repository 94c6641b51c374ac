"""evalbench: the cheapest CPU configuration of a causal LM whose quality is still good enough."""

from importlib.metadata import PackageNotFoundError, version

from evalbench.results import load_results

try:
    __version__ = version("evalbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__", "load_results"]
