"""Calibration tokens for pruning that reads activations: the dataset's last tokens, apart from the scored ones."""

from __future__ import annotations

import torch

from evalbench.metrics.perplexity import tokenize

CHARS_PER_TOKEN = 16  # generous: the tail slice tokenized holds at least this many characters per token asked


def calibration_ids(text: str, scored_chars: int, tokenizer, tokens: int) -> tuple[torch.Tensor, bool]:
    """The last ``tokens`` token ids of ``text``, and whether they overlap its first ``scored_chars`` characters.

    Perplexity scores the text's leading tokens, so its end calibrates without scoring the
    pruned model on what chose its channels (unless the whole text is scored).
    """
    start = max(0, len(text) - tokens * CHARS_PER_TOKEN)
    ids = tokenize(text[start:], tokenizer).ids[-tokens:]
    return torch.tensor(ids, dtype=torch.long), start < scored_chars
