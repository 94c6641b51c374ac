"""lm-evaluation-harness's model interface over any evalbench backend: tasks score through ``logits``.

The torch backend hands lm-eval its own ``HFLM`` instead; this adapter serves the others, so a
task scores llama.cpp or ONNX Runtime models on the same token ids as Transformers would
(lm-eval's ``TemplateLM`` encodes each context and continuation with the model's tokenizer).
"""

from __future__ import annotations

from typing import Any

import torch
from lm_eval.api.model import TemplateLM

from evalbench.errors import EvalbenchError
from evalbench.metrics import chunked


class BackendLM(TemplateLM):
    """Log-likelihoods from :meth:`~evalbench.backends.base.Backend.logits`, one request at a time."""

    def __init__(self, backend: Any, tokenizer: Any, batch_size: int = 1, max_length: int = 2048) -> None:
        super().__init__()
        self.backend, self.tokenizer, self.batch_size, self.max_length = backend, tokenizer, batch_size, max_length

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def _continuation_log_prob(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """Summed log-probability of ``continuation`` after ``context``, and whether greedy decoding gives it."""
        window = torch.tensor((context + continuation)[-(self.max_length + 1) :][:-1], dtype=torch.long)
        rows = chunked.log_softmax(self.backend.logits(window)[-len(continuation) :])  # the continuation's rows only
        targets = torch.tensor(continuation, dtype=torch.long)
        chosen = rows.gather(1, targets[:, None])[:, 0]
        return float(chosen.double().sum()), bool((rows.argmax(dim=-1) == targets).all())

    def _loglikelihood_tokens(self, requests: list, **kwargs: Any) -> list[tuple[float, bool]]:
        results = []
        for key, context, continuation in requests:
            result = self._continuation_log_prob(context, continuation)
            self.cache_hook.add_partial("loglikelihood", key, result)
            results.append(result)
        return results

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in non-overlapping windows, each conditioned on the one token before it."""
        totals = []
        for (text,) in (request.args for request in requests):
            tokens = [self.prefix_token_id, *self.tok_encode(text)]
            total = sum(
                self._continuation_log_prob(tokens[max(0, start - 1) : start], tokens[start : start + self.max_length])[
                    0
                ]
                for start in range(1, len(tokens), self.max_length)
            )
            totals.append(total)
        return totals

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        raise EvalbenchError(
            f"quality.tasks: generation tasks are not supported on backend={self.backend.name}; "
            "valid: loglikelihood tasks (lambada_openai, hellaswag, ...) or backend=torch"
        )
