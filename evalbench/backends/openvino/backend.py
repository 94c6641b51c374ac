"""OpenVINO on the CPU: the model's IR, compiled by the CPU plugin, scored and timed through its infer request.

The IR is stateful (the KV cache lives in the request's state), with inputs ``input_ids``,
``attention_mask``, ``position_ids`` and ``beam_idx``. Scoring resets the state and runs a window
as one sequence, reading the logits of every position. Generation is timed in evalbench's own
loop over the same request: the prompts as one batch, then one token per sequence per step,
chosen greedily, never stopping early. For generation the model is compiled with the output
head reading the last position only (as ``openvino_genai.LLMPipeline`` does), so the prefill
does not pay for logits it drops.
"""

from __future__ import annotations

import json
import logging
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalbench.backends.base import Backend
from evalbench.backends.openvino.config import DEFAULT_KV_BYTES, KV_CACHE_PRECISIONS, OpenVinoConfig
from evalbench.backends.openvino.export import MODEL_XML, compressed_ir, float_ir
from evalbench.backends.openvino.precision import INSTALL
from evalbench.calibration.base import Calibration
from evalbench.errors import EvalbenchError
from evalbench.metrics import chunked
from evalbench.metrics.speed import GenerationTiming

log = logging.getLogger(__name__)
# Nodes between a weight constant and the op reading it: decompression (int8/int4) and reshapes.
PASS_THROUGH = {"Convert", "Subtract", "Multiply", "Reshape"}


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise EvalbenchError(f"backend=openvino needs OpenVINO: {INSTALL} (evalbench's openvino extra)") from exc
    return openvino


def _feeds_only_gathers(node: Any, hops: int = 4) -> bool:
    """Whether every path from ``node`` reaches a ``Gather`` (a table looked up by token), through decompression."""
    consumers = [target.get_node() for output in node.outputs() for target in output.get_target_inputs()]
    if not consumers or hops == 0:
        return False
    return all(
        c.get_type_name() == "Gather" or (c.get_type_name() in PASS_THROUGH and _feeds_only_gathers(c, hops - 1))
        for c in consumers
    )


def _last_position_logits(model: Any) -> Any:
    """``model`` with its output head reading only the last position's hidden state."""
    from openvino import opset13 as ops

    head = model.output("logits").get_node().input_value(0).get_node()
    while head.get_type_name() != "MatMul":
        head = head.input_value(0).get_node()
    hidden = head.input_value(0)
    last = ops.slice(hidden, np.array([-1]), np.array([np.iinfo(np.int64).max]), np.array([1]), np.array([1]))
    head.input(0).replace_source_output(last.output(0))
    model.validate_nodes_and_infer_types()
    return model


def _type_name(value: Any) -> str:
    """An OpenVINO element type as its short name (``f16``, ``u8``)."""
    return str(getattr(value, "to_string", lambda: value)())


class OpenVinoBackend(Backend):
    """The model's IR at the precision, compiled by OpenVINO's CPU plugin."""

    name = "openvino"
    config: OpenVinoConfig

    def __init__(self, config: OpenVinoConfig, precision: Any, model_cfg: Any, cache_dir: Path) -> None:
        super().__init__(config, precision, model_cfg, cache_dir)
        self.ov = _import_openvino()
        self.core = self.ov.Core()
        self.calibration = Calibration()
        self.threads = 1
        self.kind: str | None = None  # "scoring" (logits of every position) or "generation" (the last one)
        self.compiled: Any = None
        self.request: Any = None
        self.last_tokens: torch.Tensor | None = None

    def version(self) -> str:
        return f"openvino {version('openvino')}"

    def load(self, tokenizer: Any) -> dict[str, Any]:
        cache_dir = Path(self.cache_dir).expanduser()
        base, base_record = float_ir(self.model_cfg, cache_dir, self.config.exporter_python)
        self.folder, record = compressed_ir(base, base_record, self.precision, self.calibration)
        self.model_config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        started = time.perf_counter()
        self._read_layout()
        self._check_vocab(tokenizer)
        self._compile("scoring")
        return {
            "model_file": str(self.folder / MODEL_XML),
            "model_file_bytes": sum(p.stat().st_size for p in self.folder.glob("openvino_model.*")),
            "ov_exporter": record["exporter"],
            "ov_export_args": record["export_args"],
            "ov_compression": record.get("compression"),
            "convert_time_s": record["convert_time_s"] + record.get("export_time_s", 0.0),
            "load_time_s": time.perf_counter() - started,
            "weight_bytes": self.weight_bytes(),
            **self.calibration.record_fields(),
            **({"calibration_time_s": record["convert_time_s"]} if self.calibration.enabled else {}),
        }

    def _read_layout(self) -> None:
        """The weights' bytes, those only looked up by token (the embedding, untied) and the vocabulary size."""
        model = self.core.read_model(str(self.folder / MODEL_XML))
        constants = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
        self.constant_bytes = sum(op.get_byte_size() for op in constants)
        self.lookup_bytes = sum(op.get_byte_size() for op in constants if _feeds_only_gathers(op))
        self.n_vocab = int(model.output("logits").get_partial_shape()[-1].get_length())

    def _check_vocab(self, tokenizer: Any) -> None:
        sizes = {len(tokenizer), self.model_config.get("vocab_size")}
        if self.n_vocab not in sizes:
            raise EvalbenchError(
                f"the OpenVINO IR has {self.n_vocab} tokens but the model's tokenizer {len(tokenizer)}: "
                "they are not the same vocabulary"
            )

    def _properties(self) -> dict[str, Any]:
        """The CPU plugin's settings: threads, inference precision and, when set, the KV cache and dynamic
        quantization."""
        properties: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": self.precision.inference_precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if self.config.kv_cache_precision is not None:
            properties["KV_CACHE_PRECISION"] = self.config.kv_cache_precision
        if self.config.dynamic_quantization_group_size is not None:
            properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = self.config.dynamic_quantization_group_size
        return properties

    def _compile(self, kind: str) -> None:
        """Compile the IR for ``kind`` ("scoring" or "generation") with ``self.threads``, unless it is."""
        if self.kind == kind and self.compiled is not None:
            return
        self.compiled = self.request = None
        model = self.core.read_model(str(self.folder / MODEL_XML))
        if kind == "generation":
            model = _last_position_logits(model)
        try:
            self.compiled = self.core.compile_model(model, "CPU", self._properties())
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise EvalbenchError(f"OpenVINO could not compile {self.folder / MODEL_XML} for the CPU: {first}") from exc
        self.request = self.compiled.create_infer_request()
        self.kind = kind

    def set_threads(self, threads: int) -> dict[str, Any]:
        if threads != self.threads:
            self.threads = threads
            kind, self.kind = self.kind or "scoring", None
            self._compile(kind)
        reported = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        if reported != threads:
            raise EvalbenchError(
                f"threads={threads} could not be set: OpenVINO's compiled model reports "
                f"INFERENCE_NUM_THREADS={reported}"
            )
        return {"ov_inference_num_threads": reported, **self.compiled_settings()}

    def compiled_settings(self) -> dict[str, Any]:
        """What the compiled model reports it computes with (the plugin may not grant a hint)."""
        get = self.compiled.get_property
        return {
            "ov_inference_precision": _type_name(get("INFERENCE_PRECISION_HINT")),
            "ov_kv_cache_precision": _type_name(get("KV_CACHE_PRECISION")),
            "ov_dynamic_quantization_group_size": int(get("DYNAMIC_QUANTIZATION_GROUP_SIZE")),
        }

    def _run(self, ids: np.ndarray, positions: np.ndarray, context: int) -> np.ndarray:
        """One call of the model on ``ids`` ``[batch, n]`` at ``positions``, with ``context`` tokens attended."""
        rows = ids.shape[0]
        self.request.infer(
            {
                "input_ids": ids,
                "attention_mask": np.ones((rows, context), dtype=np.int64),
                "position_ids": positions,
                "beam_idx": np.arange(rows, dtype=np.int32),
            }
        )
        return self.request.get_tensor("logits").data

    def logits(self, window: torch.Tensor) -> torch.Tensor:
        self._compile("scoring")
        n = len(window)
        self.request.reset_state()
        logits = self._run(window.numpy().astype(np.int64)[None], np.arange(n, dtype=np.int64)[None], n)
        if logits.shape != (1, n, self.n_vocab):
            raise EvalbenchError(
                f"the OpenVINO IR returned logits of shape {list(logits.shape)} for {n} tokens, not [1, {n}, "
                f"{self.n_vocab}]: it does not give the logits of every position"
            )
        return torch.from_numpy(np.array(logits[0], dtype=np.float32))  # a copy: the next call reuses the buffer

    def log_probs(self, window: torch.Tensor) -> torch.Tensor:
        return chunked.log_softmax(self.logits(window))

    def prepare_generation(self, prompts: torch.Tensor, new_tokens: int, kv_cache: bool) -> dict[str, Any]:
        started = time.perf_counter()
        self._compile("generation")
        return {"ov_generation_compile_time_s": time.perf_counter() - started}

    def generate(self, prompts: torch.Tensor, new_tokens: int) -> GenerationTiming:
        self._compile("generation")
        rows, length = prompts.shape
        tokens = np.empty((rows, new_tokens), dtype=np.int64)
        stamps = []
        self.request.reset_state()
        started = time.perf_counter()
        positions = np.broadcast_to(np.arange(length, dtype=np.int64), (rows, length))
        logits = self._run(np.ascontiguousarray(prompts.numpy(), dtype=np.int64), positions, length)
        for step in range(new_tokens):
            tokens[:, step] = logits[:, -1].argmax(-1)
            stamps.append(time.perf_counter())
            if step + 1 < new_tokens:
                position = np.full((rows, 1), length + step, dtype=np.int64)
                logits = self._run(tokens[:, step : step + 1], position, length + step + 1)
        self.last_tokens = torch.from_numpy(tokens)
        return GenerationTiming(stamps[0] - started, stamps[-1] - stamps[0], np.diff(stamps).tolist())

    def weight_bytes(self) -> int:
        return self.constant_bytes

    def decode_bytes_per_step(self, batch_size: int, context_tokens: float) -> dict[str, float]:
        """Every weight but the rows of the token table the batch looks up, and the KV cache at its precision."""
        rows_read = min(1.0, batch_size / self.n_vocab)
        weights = float(self.constant_bytes - self.lookup_bytes * (1 - rows_read))
        config = self.model_config
        heads = config.get("num_key_value_heads") or config["num_attention_heads"]
        head_size = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        item = KV_CACHE_PRECISIONS.get(_type_name(self.compiled.get_property("KV_CACHE_PRECISION")), DEFAULT_KV_BYTES)
        kv = batch_size * context_tokens * 2 * config["num_hidden_layers"] * heads * head_size * item
        return {"weights": weights, "kv_cache": float(kv), "total": weights + kv}

    def close(self) -> None:
        self.compiled = self.request = None
