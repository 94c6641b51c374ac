"""In-process sweeps keep the last converted model: the next configuration of the same model and
precision (another thread count or batch size) skips loading and converting it. A configuration
of another model or precision drops it first, so its memory never counts against the next one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from evalbench.model.source import ModelSource


@dataclass
class ConvertedModel:
    key: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: ModelSource
    fields: dict[str, Any]  # the record fields of the run that loaded and converted it


_kept: ConvertedModel | None = None


def reuse_key(model_cfg: Any, precision: dict[str, Any], cache_dir: str) -> str:
    return json.dumps({"model": model_cfg, "precision": precision, "cache_dir": cache_dir}, sort_keys=True, default=str)


def take(key: str) -> ConvertedModel | None:
    """The kept model when it is ``key``'s; otherwise drop whatever is kept and return None."""
    global _kept
    if _kept is not None and _kept.key == key:
        return _kept
    _kept = None
    return None


def keep(entry: ConvertedModel) -> None:
    global _kept
    _kept = entry
