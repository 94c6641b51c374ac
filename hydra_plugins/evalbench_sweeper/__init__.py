"""Hydra sweeper plugin of evalbench (``hydra/sweeper=evalbench``)."""
