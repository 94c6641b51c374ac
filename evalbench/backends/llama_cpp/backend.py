"""llama.cpp through llama-cpp-python's low-level API: a GGUF file scored and timed on the CPU.

Scoring uses one context whose batches ask for the logits of every position; generation uses
another with one sequence per prompt (its own KV cache stream each), decoded together one token
per sequence per ``llama_decode`` call, as llama.cpp's ``llama-batched-bench`` does.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from evalbench.backends.base import Backend
from evalbench.backends.llama_cpp.config import KV_CACHE_TYPES, LOAD_MODES, LlamaCppConfig
from evalbench.backends.llama_cpp.convert import captured_log, init_llama_cpp, prepared_gguf
from evalbench.errors import EvalbenchError
from evalbench.metrics.speed import GenerationTiming

FLASH_ATTN_TYPES = {
    "auto": "LLAMA_FLASH_ATTN_TYPE_AUTO",
    "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED",
    "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED",
}
CHECKED_TOKENS = 16  # token ids compared between the GGUF's vocabulary and the tokenizer
LOAD_ERROR = "error loading model: "  # logged by llama_model_load before its reason
BUFFER_LINE = re.compile(r"(\S+) model buffer size =\s*([\d.]+) MiB")  # logged by llama.cpp's load_tensors


def _weight_buffers(log_lines: list[str]) -> dict[str, int]:
    """Bytes of each weight buffer llama.cpp made while loading, by buffer type (``CPU_Mapped``, ``CPU_REPACK``)."""
    found = (BUFFER_LINE.search(line) for line in log_lines)
    return {match[1]: round(float(match[2]) * 2**20) for match in found if match}


class _Batch:
    """A reusable ``llama_batch`` (one sequence id per token) with numpy views of its arrays."""

    def __init__(self, llama_cpp: Any, capacity: int) -> None:
        self._llama_cpp, self.capacity = llama_cpp, capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self.output = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))
        np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))[:] = 1
        self._seqs = [-1] * capacity
        self.set_seqs([0] * capacity)

    def set_seqs(self, seqs: list[int]) -> None:
        """Give the first ``len(seqs)`` tokens these sequence ids."""
        for i, seq in enumerate(seqs):
            if self._seqs[i] != seq:
                self.raw.seq_id[i][0] = self._seqs[i] = seq

    def fill(self, tokens: np.ndarray, positions: np.ndarray, outputs: np.ndarray | int = 1) -> None:
        """Make the batch ``tokens`` at ``positions``, with logits where ``outputs`` is set."""
        n = len(tokens)
        self.token[:n], self.pos[:n], self.output[:n] = tokens, positions, outputs
        self.raw.n_tokens = n

    def close(self) -> None:
        if self.raw is not None:
            self._llama_cpp.llama_batch_free(self.raw)
            self.raw = None


class _Context:
    """A llama.cpp context with its batch, sized for ``n_seq`` sequences of ``n_ctx_seq`` tokens each."""

    def __init__(self, llama_cpp: Any, model: Any, config: LlamaCppConfig, n_seq: int, n_ctx_seq: int, threads: int):
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.kv_unified = n_seq * n_ctx_seq, n_seq, n_seq == 1
        params.n_batch, params.n_ubatch = max(config.n_batch, n_seq), config.n_ubatch
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = getattr(llama_cpp, FLASH_ATTN_TYPES[config.flash_attn])
        params.type_k = params.type_v = getattr(llama_cpp, KV_CACHE_TYPES[config.kv_cache_type][0])
        params.no_perf = True
        self._llama_cpp, self.n_seq, self.n_ctx_seq = llama_cpp, n_seq, n_ctx_seq
        with captured_log() as lines:
            self.ctx = llama_cpp.llama_init_from_model(model, params)
        if self.ctx is None:
            reason = lines[-1].split(": ", 1)[-1].strip() if lines else "no reason logged"
            raise EvalbenchError(
                f"llama.cpp could not create a context of {n_seq} x {n_ctx_seq} tokens "
                f"(backend.kv_cache_type={config.kv_cache_type}): {reason}"
            )
        self.batch = _Batch(llama_cpp, params.n_batch)

    def clear(self) -> None:
        """Empty the KV cache: the next batch starts fresh sequences."""
        self._llama_cpp.llama_memory_clear(self._llama_cpp.llama_get_memory(self.ctx), True)

    def decode(self) -> None:
        status = self._llama_cpp.llama_decode(self.ctx, self.batch.raw)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} for a batch of {self.batch.raw.n_tokens} tokens")

    def logits(self, rows: int, n_vocab: int) -> np.ndarray:
        """The logits of the last batch's ``rows`` outputs, in batch order (a view, valid until the next decode)."""
        return np.ctypeslib.as_array(self._llama_cpp.llama_get_logits(self.ctx), shape=(rows, n_vocab))

    def close(self) -> None:
        self.batch.close()
        if self.ctx is not None:
            self._llama_cpp.llama_free(self.ctx)
            self.ctx = None


class LlamaCppBackend(Backend):
    """A GGUF file of the model at one GGUF type, run by llama.cpp on the CPU."""

    name = "llama_cpp"
    config: LlamaCppConfig

    def __init__(self, config: LlamaCppConfig, precision: Any, model_cfg: Any, cache_dir: Path) -> None:
        super().__init__(config, precision, model_cfg, cache_dir)
        self.llama_cpp = init_llama_cpp()
        self.model = None
        self.threads = 1
        self.scoring: _Context | None = None
        self.generation: _Context | None = None
        self.last_tokens: torch.Tensor | None = None  # the tokens of the last ``generate`` call [batch, new]

    def version(self) -> str:
        return f"llama-cpp-python {self.llama_cpp.__version__} (llama.cpp {self.llama_cpp.llama_version().decode()})"

    def load(self, tokenizer: Any) -> dict[str, Any]:
        path, fields = prepared_gguf(
            self.model_cfg, self.precision, self.cache_dir, self.config.gguf_file, calibration=self.calibration
        )
        started = time.perf_counter()
        with captured_log() as lines:
            self.model = self._load_model(path)
        buffers = _weight_buffers(lines)
        self.n_vocab = self.llama_cpp.llama_vocab_n_tokens(self.llama_cpp.llama_model_get_vocab(self.model))
        self._check_vocab(tokenizer, Path(fields["gguf_source"]))
        self.scoring = self._context(1, self.config.n_ctx)
        self._read_layout(path)
        return {
            **fields,
            "load_time_s": time.perf_counter() - started,
            "parameters": self.llama_cpp.llama_model_n_params(self.model),
            "weight_bytes": self.weight_bytes(),
            "mapped_weight_bytes": buffers.get("CPU_Mapped", 0),  # the file's tensor data, memory-mapped
            "repacked_weight_bytes": buffers.get("CPU_REPACK", 0),  # copies re-laid-out for faster kernels
            "read_weight_bytes": buffers.get("CPU", 0),  # read into memory (load_mode=read or mlock)
            "llama_cpp_system_info": self.llama_cpp.llama_print_system_info().decode().strip(),
            **self.calibration.record_fields(),
        }

    def _load_model(self, path: Path) -> Any:
        params = self.llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        params.load_mode = getattr(self.llama_cpp, LOAD_MODES[self.config.load_mode])
        with captured_log() as lines:
            model = self.llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if model is None:
            errors = [line.split(LOAD_ERROR, 1)[1] for line in lines if LOAD_ERROR in line]
            raise EvalbenchError(f"llama.cpp could not load {path}: {errors[-1] if errors else 'no reason logged'}")
        return model

    def _check_vocab(self, tokenizer: Any, source: Path) -> None:
        """Raise unless the GGUF's vocabulary is the tokenizer's: same size and the same strings for sampled ids."""
        sizes = {len(tokenizer)}
        if (source / "config.json").is_file():
            sizes.add(json.loads((source / "config.json").read_text(encoding="utf-8")).get("vocab_size"))
        if self.n_vocab not in sizes:
            raise EvalbenchError(
                f"the GGUF has {self.n_vocab} tokens but the model's tokenizer {len(tokenizer)}: "
                "they are not the same vocabulary"
            )
        vocab = self.llama_cpp.llama_model_get_vocab(self.model)
        common = min(self.n_vocab, len(tokenizer))
        for token in sorted({int(i) for i in np.linspace(0, common - 1, CHECKED_TOKENS)}):
            ours = self.llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", errors="replace")
            theirs = tokenizer.convert_ids_to_tokens(token)
            if ours != theirs:
                raise EvalbenchError(
                    f"token {token} is {ours!r} in the GGUF but {theirs!r} in the model's tokenizer: "
                    "they are not the same vocabulary"
                )

    def _read_layout(self, path: Path) -> None:
        """Tensor sizes and KV cache geometry, for ``weight_bytes`` and ``decode_bytes_per_step``."""
        reader = gguf.GGUFReader(path)
        self.tensor_bytes = {t.name: int(t.n_bytes) for t in reader.tensors}
        arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
        n_embd, n_head = self.llama_cpp.llama_model_n_embd(self.model), self.llama_cpp.llama_model_n_head(self.model)
        lengths = [
            reader.get_field(key.format(arch=arch))
            for key in (gguf.Keys.Attention.KEY_LENGTH, gguf.Keys.Attention.VALUE_LENGTH)
        ]
        head_dims = [int(field.contents()) if field else n_embd // n_head for field in lengths]
        self.kv_bytes_per_token = (
            self.llama_cpp.llama_model_n_layer(self.model)
            * self.llama_cpp.llama_model_n_head_kv(self.model)
            * sum(head_dims)
            * KV_CACHE_TYPES[self.config.kv_cache_type][1]
        )

    def _context(self, n_seq: int, n_ctx_seq: int) -> _Context:
        return _Context(self.llama_cpp, self.model, self.config, n_seq, n_ctx_seq, self.threads)

    def set_threads(self, threads: int) -> dict[str, Any]:
        self.threads = threads
        for context in (self.scoring, self.generation):
            if context is not None:
                self.llama_cpp.llama_set_n_threads(context.ctx, threads, threads)
        ctx = self.scoring.ctx
        actual = {
            "n_threads": self.llama_cpp.llama_n_threads(ctx),
            "n_threads_batch": self.llama_cpp.llama_n_threads_batch(ctx),
        }
        if set(actual.values()) != {threads}:
            raise EvalbenchError(f"threads={threads} could not be set: llama.cpp reports {actual}")
        return actual

    def log_probs(self, window: torch.Tensor) -> torch.Tensor:
        n = len(window)
        if n > self.scoring.n_ctx_seq:
            self.scoring.close()
            self.scoring = self._context(1, n)
        context, ids = self.scoring, window.numpy().astype(np.int32)
        context.clear()
        logits = np.empty((n, self.n_vocab), dtype=np.float32)
        step = context.batch.capacity
        for start in range(0, n, step):
            chunk = ids[start : start + step]
            context.batch.fill(chunk, np.arange(start, start + len(chunk)))
            context.decode()
            logits[start : start + len(chunk)] = context.logits(len(chunk), self.n_vocab)
        return torch.log_softmax(torch.from_numpy(logits), dim=-1)

    def _generation_context(self, n_seq: int, n_ctx_seq: int) -> _Context:
        """The generation context, made anew when the batch size changes or the sequences outgrow it."""
        current = self.generation
        if current is None or current.n_seq != n_seq or current.n_ctx_seq < n_ctx_seq:
            if current is not None:
                current.close()
            self.generation = self._context(n_seq, n_ctx_seq)
        return self.generation

    def _prefill(self, context: _Context, prompts: np.ndarray) -> np.ndarray:
        """Decode every prompt (sequence ``i`` is row ``i``) and return each one's greedy next token."""
        rows, length = prompts.shape
        tokens, seqs = prompts.reshape(-1), np.repeat(np.arange(rows), length)
        positions, outputs = np.tile(np.arange(length), rows), np.tile(np.arange(length) == length - 1, rows)
        first = np.empty(rows, dtype=np.int32)
        step = context.batch.capacity
        for start in range(0, len(tokens), step):
            part = slice(start, start + step)
            context.batch.set_seqs(seqs[part].tolist())
            context.batch.fill(tokens[part], positions[part], outputs[part])
            context.decode()
            finished = seqs[part][outputs[part]]
            first[finished] = context.logits(len(finished), self.n_vocab).argmax(axis=1)
        return first

    def generate(self, prompts: torch.Tensor, new_tokens: int) -> GenerationTiming:
        rows, length = prompts.shape
        context = self._generation_context(rows, length + new_tokens)
        context.clear()
        batch, tokens = context.batch, np.empty((rows, new_tokens), dtype=np.int32)
        started = time.perf_counter()
        tokens[:, 0] = self._prefill(context, prompts.numpy().astype(np.int32))
        stamps = [time.perf_counter()]
        batch.set_seqs(list(range(rows)))
        batch.fill(tokens[:, 0], np.full(rows, length), 1)
        for step in range(1, new_tokens):
            context.decode()
            tokens[:, step] = batch.token[:rows] = context.logits(rows, self.n_vocab).argmax(axis=1)
            stamps.append(time.perf_counter())
            batch.pos[:rows] += 1
        self.last_tokens = torch.from_numpy(tokens).long()
        return GenerationTiming(stamps[0] - started, stamps[-1] - stamps[0], np.diff(stamps).tolist())

    def weight_bytes(self) -> int:
        return sum(self.tensor_bytes.values())

    def decode_bytes_per_step(self, batch_size: int, context_tokens: float) -> dict[str, float]:
        weights = float(self.weight_bytes())
        embedding = self.tensor_bytes["token_embd.weight"]
        if "output.weight" in self.tensor_bytes:  # the embedding is only looked up: one row per sequence
            weights -= embedding - batch_size * embedding / self.n_vocab
        kv = batch_size * context_tokens * self.kv_bytes_per_token
        return {"weights": weights, "kv_cache": float(kv), "total": weights + kv}

    def close(self) -> None:
        for context in (self.scoring, self.generation):
            if context is not None:
                context.close()
        self.scoring = self.generation = None
        if self.model is not None:
            self.llama_cpp.llama_model_free(self.model)
            self.model = None
