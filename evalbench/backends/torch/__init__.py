"""Eager PyTorch through Hugging Face Transformers, with its precisions (``precision/``)."""
