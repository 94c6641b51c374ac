"""From a results table to a decision: objectives, the Pareto front, the recommendation."""
