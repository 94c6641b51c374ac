"""evalbench: the cheapest CPU configuration of a causal LM whose quality is still good enough."""

from importlib.metadata import PackageNotFoundError, version

from evalbench.results import load_results


def __getattr__(name: str):
    """Import the analysis API on first use: ``load_results`` alone needs only pandas."""
    if name == "pareto_front":
        from evalbench.analysis.pareto import pareto_front

        return pareto_front
    if name in ("recommend", "Recommendation"):
        from evalbench.analysis import recommend

        return getattr(recommend, name)
    raise AttributeError(name)


try:
    __version__ = version("evalbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = ["Recommendation", "__version__", "load_results", "pareto_front", "recommend"]
