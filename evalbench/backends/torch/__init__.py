"""Eager PyTorch through Hugging Face Transformers, with evalbench's precisions (``evalbench/precision``)."""
