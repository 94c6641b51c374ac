"""Load a model and its tokenizer in FP32; GGUF checkpoints are converted once and cached."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from filelock import FileLock
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from evalbench.config import ModelConfig
from evalbench.errors import EvalbenchError
from evalbench.model.source import ModelSource, resolve_source
from evalbench.progress import logged_step

log = logging.getLogger(__name__)


def _gguf_cache_dir(gguf_path: Path, cache_dir: Path) -> Path:
    """A folder named after the GGUF file's identity and the transformers version that converts it."""
    stat = gguf_path.stat()
    identity = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_dir / "converted" / f"{gguf_path.stem}-{digest}"


def _convert_gguf(source: ModelSource, target: Path) -> None:
    """De-quantize a GGUF checkpoint to FP32 safetensors in ``target`` (written atomically)."""
    kwargs = {"gguf_file": source.gguf_file}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32, **kwargs)
    except Exception as exc:  # gguf raises assorted types on a damaged file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvalbenchError(
            f"model.gguf_file={str(source.gguf_path)!r} could not be read as GGUF: {first_line}"
        ) from exc
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # the weights are plain FP32 now
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def checkpoint_dir(cfg: ModelConfig, cache_dir: str | Path) -> tuple[str, ModelSource]:
    """The directory or hub id to load with ``from_pretrained``, converting a GGUF file on first use."""
    source = resolve_source(cfg)
    if source.gguf_file is None:
        _check_model_dir(source)
        return source.location, source
    if source.gguf_path is None:
        raise EvalbenchError(f"model.gguf_file needs a local model.path; {source.location!r} is a hub id")
    target = _gguf_cache_dir(source.gguf_path, Path(cache_dir).expanduser())
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            with logged_step(log, f"converting {source.gguf_path} to FP32 (once; cached in {target})"):
                _convert_gguf(source, target)
    return str(target), source


def _from_pretrained(loader: Any, cfg: ModelConfig, location: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(
            location, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **kwargs
        )
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise EvalbenchError(f"model.path={cfg.path or location!r} could not be loaded: {first_line}") from exc


def load_tokenizer(cfg: ModelConfig, cache_dir: str | Path) -> tuple[PreTrainedTokenizerBase, ModelSource]:
    """The model's Hugging Face tokenizer: it makes the token ids every backend is fed."""
    location, source = checkpoint_dir(cfg, cache_dir)
    return _from_pretrained(AutoTokenizer, cfg, location), source


def load_model(
    cfg: ModelConfig, cache_dir: str | Path, read_into_memory: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelSource]:
    """Load the model in FP32 eval mode and its tokenizer.

    The safetensors files are memory-mapped, or read whole into memory first with ``read_into_memory``.
    """
    tokenizer, source = load_tokenizer(cfg, cache_dir)
    location, _ = checkpoint_dir(cfg, cache_dir)
    model = _from_pretrained(AutoModelForCausalLM, cfg, location, dtype=torch.float32, disable_mmap=read_into_memory)
    return model.eval(), tokenizer, source
