"""Quality of the converted model: perplexity, distribution distance from a reference, lm-eval tasks."""
