"""ONNX Runtime GenAI on the CPU: the model builder's export of the model, scored and timed.

Scoring feeds a window to a fresh generator and reads the ``logits`` output, which holds
every position (the builder is told not to prune the head). Generation decodes the prompts
as one batch of a greedy generator whose ``min_length`` and ``max_length`` are both the
prompt plus the new tokens, so no sequence stops early (EOS is masked, as the torch
backend's ``min_new_tokens`` does).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalbench.backends.base import Backend
from evalbench.backends.ort_genai.config import OrtGenaiConfig
from evalbench.backends.ort_genai.export import exported_model, versions
from evalbench.errors import EvalbenchError
from evalbench.metrics import chunked
from evalbench.metrics.speed import GenerationTiming

log = logging.getLogger(__name__)
TRACE_LEVEL = 1  # ONNX Runtime's info level: the session traces its options (thread pool sizes) when created
INTRA_OP_TRACE = re.compile(r"intra_op_param:OrtThreadPoolParams \{ thread_pool_size: (-?\d+)")
# Inputs that are tables looked up by token or position (one row per sequence read per step).
LOOKUP_INPUTS = {"Gather": (0,), "GatherBlockQuantized": (0, 2, 3), "GroupQueryAttention": (7, 8)}


def _import_og() -> Any:
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise EvalbenchError(
            "backend=ort_genai needs onnxruntime-genai: pip install onnxruntime-genai==0.18.0 onnxruntime==1.32.0 "
            "onnx==1.23.2 onnx-ir==1.1.0 (evalbench's ort extra)"
        ) from exc
    return onnxruntime_genai


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """The lines written to file descriptor 2 (ONNX Runtime's log) while the block runs."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Layout:
    """Initializer sizes, which of them are looked-up tables, and the KV cache's bytes per token, from the ONNX file."""

    def __init__(self, folder: Path, decoder: dict[str, Any]) -> None:
        import onnx
        from onnx import helper

        graph = onnx.load(str(folder / decoder["filename"]), load_external_data=False).graph
        self.bytes = {tensor.name: _tensor_bytes(tensor) for tensor in graph.initializer}
        self.rows = {tensor.name: int(tensor.dims[0]) if tensor.dims else 1 for tensor in graph.initializer}
        self.lookups = _lookup_tables(graph, set(self.bytes))
        transposed = {name for node in graph.node if node.op_type == "Transpose" for name in node.input}
        self.folded_bytes = sum(size for name, size in self.bytes.items() if name in transposed)
        key = next(i for i in graph.input if i.name == decoder["inputs"]["past_key_names"] % 0)
        itemsize = helper.tensor_dtype_to_np_dtype(key.type.tensor_type.elem_type).itemsize
        self.kv_bytes_per_token = (
            2 * decoder["num_hidden_layers"] * decoder["num_key_value_heads"] * decoder["head_size"] * itemsize
        )


def _tensor_bytes(tensor: Any) -> int:
    """Bytes of an initializer's data, in the ``.onnx.data`` file or in the ``.onnx`` file itself."""
    from onnx import TensorProto, numpy_helper

    if tensor.data_location == TensorProto.EXTERNAL:
        return int({entry.key: entry.value for entry in tensor.external_data}["length"])
    return len(tensor.raw_data) if tensor.raw_data else int(numpy_helper.to_array(tensor).nbytes)


def _lookup_tables(graph: Any, initializers: set[str]) -> set[str]:
    """Initializers only ever read as tables indexed by token or position (an untied embedding, RoPE caches)."""
    uses: dict[str, set[bool]] = {}
    for node in graph.node:
        lookup_inputs = LOOKUP_INPUTS.get(node.op_type, ())
        for index, name in enumerate(node.input):
            if name in initializers:
                uses.setdefault(name, set()).add(index in lookup_inputs)
    return {name for name, kinds in uses.items() if kinds == {True}}


class OrtGenaiBackend(Backend):
    """The model exported by the onnxruntime-genai model builder, run by ONNX Runtime's CPU provider."""

    name = "ort_genai"
    config: OrtGenaiConfig

    def __init__(self, config: OrtGenaiConfig, precision: Any, model_cfg: Any, cache_dir: Path) -> None:
        super().__init__(config, precision, model_cfg, cache_dir)
        self.og = _import_og()
        self.model: Any = None
        self.folder: Path | None = None
        self.threads = 1
        self.intra_op_num_threads: int | None = None
        self.last_tokens: torch.Tensor | None = None  # the tokens of the last ``generate`` call [batch, new]

    def version(self) -> str:
        return versions()

    def load(self, tokenizer: Any) -> dict[str, Any]:
        self.folder, fields = exported_model(
            self.model_cfg, self.precision, self.cache_dir, self.config.builder_options
        )
        self.genai_config = json.loads((self.folder / "genai_config.json").read_text(encoding="utf-8"))
        self.n_vocab = int(self.genai_config["model"]["vocab_size"])
        self._check_vocab(tokenizer)
        started = time.perf_counter()
        self._load_model()
        loaded = time.perf_counter() - started
        self.layout = _Layout(self.folder, self.genai_config["model"]["decoder"])
        return {
            **fields,
            "load_time_s": loaded,
            "weight_bytes": self.weight_bytes(),
            "onnx_initializers": len(self.layout.bytes),
            # ONNX Runtime folds Transpose nodes of initializers into new ones when it creates the session:
            # with tied embeddings the builder's Gather reads the transposed output head, a second copy in memory.
            "folded_weight_bytes": self.layout.folded_bytes,
        }

    def _check_vocab(self, tokenizer: Any) -> None:
        """Raise unless the exported model's vocabulary size is the tokenizer's (or its checkpoint's)."""
        source = Path(json.loads((self.folder / "evalbench_export.json").read_text(encoding="utf-8"))["source"])
        sizes = {len(tokenizer)}
        if (source / "config.json").is_file():
            sizes.add(json.loads((source / "config.json").read_text(encoding="utf-8")).get("vocab_size"))
        if self.n_vocab not in sizes:
            raise EvalbenchError(
                f"the exported model has {self.n_vocab} tokens but the model's tokenizer {len(tokenizer)}: "
                "they are not the same vocabulary"
            )

    def _session_options(self) -> str:
        """The ``genai_config.json`` overlay setting the decoder session's threads (and tracing its options)."""
        options = {"intra_op_num_threads": self.threads, "log_severity_level": TRACE_LEVEL}
        return json.dumps({"model": {"decoder": {"session_options": options}}})

    def _load_model(self) -> None:
        """(Re)create the model's session with ``self.threads`` intra-op threads on the CPU provider."""
        self.model = None
        config = self.og.Config(str(self.folder))
        config.clear_providers()
        config.overlay(self._session_options())
        try:
            with _captured_stderr() as lines:
                self.model = self.og.Model(config)
        except Exception as exc:  # onnxruntime-genai raises RuntimeError on a model ONNX Runtime rejects
            raise EvalbenchError(
                f"onnxruntime-genai could not load the {self.precision.name} export in {self.folder}: "
                f"{_first_line(exc)}"
            ) from exc
        finally:
            for line in lines:
                log.log(logging.WARNING if re.match(r"\S+ \S+ \[[WEF]:", line) else logging.DEBUG, "ort: %s", line)
        traced = [int(found[1]) for found in map(INTRA_OP_TRACE.search, lines) if found]
        self.intra_op_num_threads = traced[-1] if traced else None

    def set_threads(self, threads: int) -> dict[str, Any]:
        if threads != self.threads or self.model is None:
            self.threads = threads
            self._load_model()
        if self.intra_op_num_threads != threads:
            raise EvalbenchError(
                f"threads={threads} could not be set: ONNX Runtime's session reports intra_op_num_threads="
                f"{self.intra_op_num_threads}"
            )
        return {"intra_op_num_threads": self.intra_op_num_threads}

    def _generator(self, batch_size: int, max_length: int, min_length: int = 0) -> Any:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(
            batch_size=batch_size, max_length=max_length, min_length=min_length, do_sample=False, num_beams=1
        )
        return self.og.Generator(self.model, params)

    def logits(self, window: torch.Tensor) -> torch.Tensor:
        n = len(window)
        generator = self._generator(1, n)
        generator.append_tokens(window.numpy().astype(np.int32)[None])
        logits = generator.get_output("logits")
        if logits.shape != (1, n, self.n_vocab):
            raise EvalbenchError(
                f"the exported model returned logits of shape {list(logits.shape)} for {n} tokens, not "
                f"[1, {n}, {self.n_vocab}]: it was not exported with the logits of every position"
            )
        return torch.from_numpy(np.asarray(logits[0], dtype=np.float32))

    def log_probs(self, window: torch.Tensor) -> torch.Tensor:
        return chunked.log_softmax(self.logits(window))

    def generate(self, prompts: torch.Tensor, new_tokens: int) -> GenerationTiming:
        rows, length = prompts.shape
        total = length + new_tokens
        generator = self._generator(rows, total, min_length=total)
        tokens = np.empty((rows, new_tokens), dtype=np.int32)
        ids = np.ascontiguousarray(prompts.numpy(), dtype=np.int32)
        stamps = []
        started = time.perf_counter()
        generator.append_tokens(ids)  # the prefill: logits of the last prompt token
        for step in range(new_tokens):
            generator.generate_next_token()  # picks a token (after the first, runs the model on the previous one)
            stamps.append(time.perf_counter())
            tokens[:, step] = generator.get_next_tokens()
        self.last_tokens = torch.from_numpy(tokens).long()
        return GenerationTiming(stamps[0] - started, stamps[-1] - stamps[0], np.diff(stamps).tolist())

    def weight_bytes(self) -> int:
        return sum(self.layout.bytes.values())

    def decode_bytes_per_step(self, batch_size: int, context_tokens: float) -> dict[str, float]:
        layout = self.layout
        weights = float(
            sum(
                size * min(1.0, batch_size / layout.rows[name]) if name in layout.lookups else size
                for name, size in layout.bytes.items()
            )
        )
        kv = batch_size * context_tokens * layout.kv_bytes_per_token
        return {"weights": weights, "kv_cache": float(kv), "total": weights + kv}

    def close(self) -> None:
        self.model = None
