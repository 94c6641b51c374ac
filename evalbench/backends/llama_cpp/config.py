"""Settings of the llama.cpp backend (``backend=llama_cpp``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from evalbench.backends.base import BackendConfig
from evalbench.errors import EvalbenchError

KV_CACHE_TYPES = {"f16": ("GGML_TYPE_F16", 2), "f32": ("GGML_TYPE_F32", 4)}  # name -> (llama_cpp constant, bytes)
FLASH_ATTN = ("auto", "on", "off")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise EvalbenchError(message)


@dataclass
class LlamaCppConfig(BackendConfig):
    """How llama.cpp loads and runs the GGUF file.

    ``gguf_file`` names an F32 or F16 GGUF of the model's weights, for a Hugging Face
    checkpoint whose architecture evalbench cannot write as GGUF itself (anything but Llama).
    """

    backend_class: ClassVar[str] = "evalbench.backends.llama_cpp.backend.LlamaCppBackend"
    name: ClassVar[str] = "llama_cpp"

    n_ctx: int = 1024  # tokens of the scoring context; grown to fit a longer window
    n_batch: int = 512  # tokens per llama_decode call
    n_ubatch: int = 512  # tokens per compute step inside a call
    use_mmap: bool = True
    flash_attn: str = "auto"
    kv_cache_type: str = "f16"
    gguf_file: str | None = None

    def __post_init__(self) -> None:
        for key in ("n_ctx", "n_batch", "n_ubatch"):
            value = getattr(self, key)
            _check(value >= 1, f"backend.{key}={value} is invalid; valid: an integer >= 1")
        _check(
            self.n_ubatch <= self.n_batch,
            f"backend.n_ubatch={self.n_ubatch} is invalid; valid: 1..backend.n_batch ({self.n_batch})",
        )
        _check(
            self.flash_attn in FLASH_ATTN, f"backend.flash_attn={self.flash_attn} is invalid; valid: {list(FLASH_ATTN)}"
        )
        _check(
            self.kv_cache_type in KV_CACHE_TYPES,
            f"backend.kv_cache_type={self.kv_cache_type} is invalid; valid: {list(KV_CACHE_TYPES)}",
        )
        _check(
            self.gguf_file is None or Path(self.gguf_file).expanduser().is_file(),
            f"backend.gguf_file={self.gguf_file!r} is not a file; valid: null or the path of an F32 or F16 GGUF",
        )
