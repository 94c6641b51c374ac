"""Load a model at a dtype and its tokenizer; a GGUF checkpoint is de-quantized to FP32 safetensors only for
the runtimes that read a Hugging Face checkpoint (torch, the ONNX model builder), once, and cached.

The tokenizer and the model's config never need that copy: they come from the checkpoint's
files, or from the GGUF's own metadata.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from filelock import FileLock
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from evalbench.config import ModelConfig
from evalbench.errors import EvalbenchError
from evalbench.model.source import ModelSource, resolve_source
from evalbench.progress import logged_step

log = logging.getLogger(__name__)


def _gguf_cache_dir(gguf_path: Path, cache_dir: Path, suffix: str = "") -> Path:
    """A folder named after the GGUF file's identity and the transformers version that converts it."""
    stat = gguf_path.stat()
    identity = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_dir / "converted" / f"{gguf_path.stem}-{digest}{suffix}"


def _unreadable_gguf(source: ModelSource, exc: Exception) -> EvalbenchError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return EvalbenchError(f"model.gguf_file={str(source.gguf_path)!r} could not be read as GGUF: {first_line}")


def _saved_once(target: Path, source: ModelSource, read: Callable[[dict[str, str]], tuple[Any, ...]]) -> Path:
    """``target`` holding what ``read`` makes of the GGUF file (objects with ``save_pretrained``), written once,
    whole, behind a file lock."""
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        try:
            parts = read({"gguf_file": source.gguf_file})
        except Exception as exc:  # gguf raises assorted types on a damaged file
            raise _unreadable_gguf(source, exc) from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        try:
            for part in parts:
                part.save_pretrained(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _dequantized(location: str, kwargs: dict[str, str]) -> tuple[Any, ...]:
    """The GGUF's model de-quantized to FP32, and its tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # the weights are plain FP32 now
    return model, AutoTokenizer.from_pretrained(location, **kwargs)


def _check_model_dir(source: ModelSource) -> None:
    """A local folder without ``config.json`` is no Hugging Face checkpoint: say what would be valid."""
    folder = Path(source.location)
    if not source.is_local or (folder / "config.json").is_file():
        return
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    hint = f"; it holds GGUF files {ggufs}: name one as model.gguf_file" if ggufs else ""
    raise EvalbenchError(
        f"model.path={source.location!r} is not a model directory: it has no config.json{hint}; valid: a Hugging "
        "Face checkpoint directory (config.json and weights), or a directory and model.gguf_file"
    )


def _checked_source(cfg: ModelConfig) -> ModelSource:
    """The model's source: a checkpoint directory or hub id, or a local GGUF file."""
    source = resolve_source(cfg)
    if source.gguf_file is None:
        _check_model_dir(source)
    elif source.gguf_path is None:
        raise EvalbenchError(f"model.gguf_file needs a local model.path; {source.location!r} is a hub id")
    return source


def checkpoint_dir(cfg: ModelConfig, cache_dir: str | Path) -> tuple[str, ModelSource]:
    """The directory or hub id to load with ``from_pretrained``, de-quantizing a GGUF file to FP32 on first use."""
    source = _checked_source(cfg)
    if source.gguf_file is None:
        return source.location, source
    target = _gguf_cache_dir(source.gguf_path, Path(cache_dir).expanduser())
    if not (target / "config.json").is_file():
        with logged_step(log, f"converting {source.gguf_path} to FP32 (once; cached in {target})"):
            _saved_once(target, source, lambda kwargs: _dequantized(source.location, kwargs))
    return str(target), source


def _from_pretrained(loader: Any, cfg: ModelConfig, location: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(
            location, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **kwargs
        )
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise EvalbenchError(f"model.path={cfg.path or location!r} could not be loaded: {first_line}") from exc


def _gguf_metadata_dir(source: ModelSource, cache_dir: str | Path) -> Path:
    """The tokenizer and config a GGUF file's metadata holds, saved once beside its converted copies."""
    target = _gguf_cache_dir(source.gguf_path, Path(cache_dir).expanduser(), "-metadata")
    return _saved_once(
        target,
        source,
        lambda kwargs: (
            AutoTokenizer.from_pretrained(source.location, **kwargs),
            AutoConfig.from_pretrained(source.location, **kwargs),
        ),
    )


def metadata_dir(cfg: ModelConfig, cache_dir: str | Path) -> tuple[str, ModelSource]:
    """Where the model's tokenizer and config are read from: the checkpoint itself, or a GGUF's metadata."""
    source = _checked_source(cfg)
    if source.gguf_file is None:
        return source.location, source
    return str(_gguf_metadata_dir(source, cache_dir)), source


def load_tokenizer(cfg: ModelConfig, cache_dir: str | Path) -> tuple[PreTrainedTokenizerBase, ModelSource]:
    """The model's Hugging Face tokenizer: it makes the token ids every backend is fed."""
    location, source = metadata_dir(cfg, cache_dir)
    return _from_pretrained(AutoTokenizer, cfg, location), source


def load_config(cfg: ModelConfig, cache_dir: str | Path) -> PretrainedConfig:
    """The model's Hugging Face config (its shape and ``dtype``), without loading a weight."""
    location, _ = metadata_dir(cfg, cache_dir)
    return _from_pretrained(AutoConfig, cfg, location)


def checkpoint_dtype(config: PretrainedConfig) -> torch.dtype:
    """The dtype the checkpoint's weights are stored in (config.json's ``dtype``; float32 when it says none)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def load_model(
    cfg: ModelConfig, cache_dir: str | Path, dtype: torch.dtype | str = torch.float32, read_into_memory: bool = False
) -> PreTrainedModel:
    """Load the model at ``dtype`` (``"auto"``: the checkpoint's own) in eval mode.

    The safetensors files are memory-mapped, or read whole into memory first with ``read_into_memory``.
    """
    location, _ = checkpoint_dir(cfg, cache_dir)
    model = _from_pretrained(AutoModelForCausalLM, cfg, location, dtype=dtype, disable_mmap=read_into_memory)
    return model.eval()
