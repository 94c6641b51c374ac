"""llama.cpp's importance matrix, computed by llama.cpp itself on the calibration tokens.

What ``llama-imatrix`` does, through the library: the base GGUF runs each calibration sequence
with an eval callback (``llama_context_params.cb_eval``) that sees every matrix multiplication
whose weight is a ``blk.*`` tensor and adds the squares of its float32 input, column by column.
The matrix is each weight's mean squared input (sum / rows), the values ``llama_model_quantize``
takes as ``params.imatrix`` (``{name, data, size}`` entries ending in a null name), as the
``llama-quantize`` tool passes them after reading an imatrix file.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalbench.errors import EvalbenchError

GGML_OP_MUL_MAT = 29  # ggml.h's enum ggml_op in the llama.cpp llama-cpp-python 0.3.36 builds
GGML_TYPE_F32 = 0
log = logging.getLogger(__name__)


class GGMLTensor(ctypes.Structure):
    """The leading fields of ggml.h's ``struct ggml_tensor`` (GGML_MAX_DIMS 4, GGML_MAX_SRC 10)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def _rows(tensor: GGMLTensor) -> np.ndarray:
    """A float32 2-D tensor's values as a ``[rows, columns]`` array (a copy)."""
    columns, rows = tensor.ne[0], tensor.ne[1] * tensor.ne[2] * tensor.ne[3]
    span = (rows - 1) * tensor.nb[1] + columns * 4
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * span).from_address(tensor.data))
    return np.lib.stride_tricks.as_strided(raw.view(np.float32), (rows, columns), (tensor.nb[1], 4)).copy()


class Collector:
    """The eval callback's state: per weight, the sum of its inputs' squares and the rows summed."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.rows: dict[str, int] = {}

    def observe(self, address: int, ask: bool, _: Any) -> bool:
        tensor = GGMLTensor.from_address(address)
        if tensor.op != GGML_OP_MUL_MAT:
            return not ask  # asked: not this one; told: carry on
        weight = GGMLTensor.from_address(tensor.src[0])
        inputs = GGMLTensor.from_address(tensor.src[1])
        name = weight.name.decode()
        wanted = name.startswith("blk.") and inputs.type == GGML_TYPE_F32 and weight.ne[2] * weight.ne[3] == 1
        if ask or not wanted:
            return wanted if ask else True
        values = _rows(inputs).astype(np.float64)
        self.sums[name] = self.sums.get(name, 0.0) + np.square(values).sum(axis=0)
        self.rows[name] = self.rows.get(name, 0) + values.shape[0]
        return True

    def matrix(self) -> dict[str, np.ndarray]:
        """Each weight's mean squared input per column."""
        return {name: (self.sums[name] / self.rows[name]).astype(np.float32) for name in sorted(self.sums)}


def _fill_all_outputs(batch: Any, ids: np.ndarray) -> None:
    """Make ``batch`` one sequence of ``ids`` with logits at every position: as ``llama-imatrix`` asks, so the last
    layer runs on every token (llama.cpp skips the rows no output needs)."""
    n = len(ids)
    np.ctypeslib.as_array(batch.token, shape=(n,))[:] = ids
    np.ctypeslib.as_array(batch.pos, shape=(n,))[:] = np.arange(n)
    np.ctypeslib.as_array(batch.n_seq_id, shape=(n,))[:] = 1
    np.ctypeslib.as_array(batch.logits, shape=(n,))[:] = 1
    for i in range(n):
        batch.seq_id[i][0] = 0
    batch.n_tokens = n


def compute(llama_cpp: Any, base: Path, windows: Sequence[torch.Tensor], threads: int) -> dict[str, np.ndarray]:
    """The importance matrix of the GGUF ``base`` on ``windows`` (each a fresh sequence)."""
    collector = Collector()
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector.observe)
    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(base).encode(), model_params)
    if model is None:
        raise EvalbenchError(f"llama.cpp could not load {base} to compute the importance matrix")
    length = max(len(w) for w in windows)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = length
    params.n_threads = params.n_threads_batch = threads
    params.cb_eval, params.cb_eval_user_data, params.no_perf = callback, None, True
    ctx = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(length, 0, 1)
    try:
        for window in windows:
            _fill_all_outputs(batch, window.numpy())
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            status = llama_cpp.llama_decode(ctx, batch)
            if status != 0:
                raise EvalbenchError(f"llama_decode returned {status} while computing the importance matrix")
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    if not collector.sums:
        raise EvalbenchError(f"the importance matrix of {base} is empty: no blk.* matrix multiplication was seen")
    return collector.matrix()


def quantize_params_imatrix(llama_cpp: Any, matrix: dict[str, np.ndarray]) -> tuple[Any, list[Any]]:
    """``matrix`` as ``llama_model_quantize_params.imatrix``: the entries, null-terminated, and what they point to
    (kept alive by the caller while quantizing)."""
    arrays = [np.ascontiguousarray(values, dtype=np.float32) for values in matrix.values()]
    names = [name.encode() for name in matrix]
    entries = (llama_cpp.llama_model_imatrix_data * (len(matrix) + 1))()
    for entry, name, values in zip(entries, names, arrays, strict=False):
        entry.name = name
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = values.size
    return entries, [names, arrays]


def save(path: Path, matrix: dict[str, np.ndarray]) -> None:
    np.savez(path, **matrix)


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}
