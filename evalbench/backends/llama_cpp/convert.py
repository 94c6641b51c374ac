"""The GGUF files the llama.cpp backend runs: a base GGUF of the model, then llama.cpp's quantizer.

The base GGUF is made once per model: by llama.cpp's own ``convert_hf_to_gguf.py`` (from the
llama.cpp source ``make setup`` compiles) at the Hugging Face checkpoint's own precision (bf16,
f16 or f32), or de-quantized to F32 from the model's GGUF. Every GGUF type is written from it by
``llama_model_quantize``, so all types start from the weights the torch backend loads. Files are
cached under ``<cache_dir>/llama_cpp/<source>-<digest>/``, each written once behind a file lock
and moved into place whole.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from filelock import FileLock

from evalbench.backends.llama_cpp import imatrix
from evalbench.errors import EvalbenchError
from evalbench.model.loader import checkpoint_dir
from evalbench.model.source import resolve_source
from evalbench.progress import logged_step

# A tensor to write: its GGUF name, numpy shape, and a function returning its float32 data.
Tensor = tuple[str, tuple[int, ...], Callable[[], np.ndarray]]
GGML_LOG_LEVEL_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
_LOG_CALLBACKS: list[Any] = []
_CAPTURES: list[list[str]] = []
log = logging.getLogger(__name__)
SKIPPED_FIELDS = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE, gguf.Keys.General.ALIGNMENT}
CONVERTER_ENV = "EVALBENCH_LLAMA_CPP_CONVERTER"  # a llama.cpp folder with convert_hf_to_gguf.py and gguf-py/
HF_DTYPES = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}  # config.json dtype -> converter --outtype
LOG_PREFIX = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.-]+:")  # logging's default format


def _log_llama_cpp(level: int, text: bytes, _: Any) -> None:
    """llama.cpp's log lines go to Python logging (errors as errors, the rest at debug level) and to captures."""
    line = text.decode(errors="replace").rstrip()
    for lines in _CAPTURES:
        lines.append(line)
    log.log(logging.ERROR if level == GGML_LOG_LEVEL_ERROR else logging.DEBUG, "llama.cpp: %s", line)


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """The lines llama.cpp logs while the block runs."""
    lines: list[str] = []
    _CAPTURES.append(lines)
    try:
        yield lines
    finally:
        _CAPTURES.remove(lines)


INSTALL = (
    'CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF '
    '-DLLAMA_BUILD_SERVER=OFF" pip install llama-cpp-python==0.3.36 (compiles; or `make setup`)'
)


@functools.cache
def init_llama_cpp() -> Any:
    """Import llama_cpp, route its log to Python logging (quiet by default) and initialise its backend once."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise EvalbenchError(f"backend=llama_cpp needs llama-cpp-python: {INSTALL}") from exc

    callback = llama_cpp.llama_log_callback(_log_llama_cpp)
    llama_cpp.llama_log_set(callback, None)
    _LOG_CALLBACKS.append(callback)  # llama.cpp keeps the pointer: keep the function alive
    llama_cpp.llama_backend_init()
    return llama_cpp


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``, moved onto it when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        yield staging
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _write_gguf(target: Path, arch: str, add_metadata: Callable[[gguf.GGUFWriter], None], tensors: list[Tensor]):
    """Write a GGUF file with the metadata ``add_metadata`` adds and ``tensors`` as F32, one at a time."""
    with _staging(target) as staging:
        writer = gguf.GGUFWriter(staging, arch)
        add_metadata(writer)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        for name, shape, _ in tensors:
            writer.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, shape, load in tensors:
            writer.write_tensor_data(np.ascontiguousarray(load(), dtype=np.float32).reshape(shape))
        writer.close()


def _copy_metadata(reader: gguf.GGUFReader) -> Callable[[gguf.GGUFWriter], None]:
    """A metadata adder copying every field of ``reader`` but those the writer sets itself."""

    def add(writer: gguf.GGUFWriter) -> None:
        for field in reader.fields.values():
            if field.name in SKIPPED_FIELDS or field.name.startswith("GGUF."):
                continue
            sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)

    return add


def f32_from_gguf(source: Path, target: Path) -> None:
    """Write ``target``: the GGUF ``source`` with every tensor de-quantized to float32 and the same metadata."""
    try:
        reader = gguf.GGUFReader(source)
        arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    except Exception as exc:  # gguf raises assorted types on a damaged file
        raise EvalbenchError(f"{str(source)!r} could not be read as GGUF: {exc}") from exc
    tensors = [
        (
            t.name,
            tuple(int(n) for n in reversed(t.shape)),
            functools.partial(gguf.quants.dequantize, t.data, t.tensor_type),
        )
        for t in reader.tensors
    ]
    _write_gguf(target, arch, _copy_metadata(reader), tensors)


def quantize(base: Path, target: Path, ftype: str, threads: int, matrix: Path | None = None) -> None:
    """Write ``target`` from the base GGUF ``base`` with ``llama_model_quantize`` (``ftype``: a llama_cpp constant),
    weighing the rounding by the importance matrix stored in ``matrix``, if given."""
    llama_cpp = init_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = threads
    kept = None
    if matrix is not None:
        params.imatrix, kept = imatrix.quantize_params_imatrix(llama_cpp, imatrix.load(matrix))
    what = f"quantizing {base.name} to {target.stem} with llama_model_quantize (once; cached as {target})"
    with logged_step(log, what), _staging(target) as staging:
        status = llama_cpp.llama_model_quantize(str(base).encode(), str(staging).encode(), ctypes.byref(params))
        if status != 0:
            raise EvalbenchError(f"llama_model_quantize could not write {ftype} from {base} (returned {status})")
    del kept  # the importance matrix's entries, alive until the quantizer is done


def converter_dir() -> Path:
    """The llama.cpp folder whose ``convert_hf_to_gguf.py`` runs: ``$EVALBENCH_LLAMA_CPP_CONVERTER``, else the
    one ``make setup`` extracts from the llama-cpp-python source it compiles."""
    version = init_llama_cpp().__version__
    default = Path.home() / ".cache" / "evalbench" / f"llama.cpp-{version}"
    folder = Path(os.environ.get(CONVERTER_ENV) or default).expanduser()
    if not ((folder / "convert_hf_to_gguf.py").is_file() and (folder / "gguf-py" / "gguf").is_dir()):
        raise EvalbenchError(
            f"llama.cpp's converter is not in {folder} (convert_hf_to_gguf.py and gguf-py/): run `make setup`, "
            f"which extracts it from the llama-cpp-python {version} source, or set {CONVERTER_ENV} to a llama.cpp "
            "folder holding them"
        )
    return folder


def converter_name(folder: Path) -> str:
    """The converter in ``folder``, as recorded: the llama-cpp-python version it came with, or its path."""
    version = folder / "VERSION"
    origin = f"llama-cpp-python {version.read_text(encoding='utf-8').strip()}" if version.is_file() else str(folder)
    return f"convert_hf_to_gguf.py ({origin})"


def checkpoint_type(model_dir: Path) -> str:
    """The GGUF type of the checkpoint's own precision (config.json's ``dtype``): bf16, f16, else f32."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return HF_DTYPES.get(str(config.get("dtype") or config.get("torch_dtype")), "f32")


def _reason(done: subprocess.CompletedProcess) -> str:
    """The converter's own last word: its last error or exception line, without logging's prefix."""
    if done.returncode < 0:
        return f"it was killed by signal {-done.returncode}"
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return LOG_PREFIX.sub("", lines[-1]) if lines else f"it exited with status {done.returncode} and no message"


def gguf_from_hf(model_dir: Path, target: Path, outtype: str, folder: Path) -> None:
    """Write ``target`` with llama.cpp's ``convert_hf_to_gguf.py`` in ``folder``, its own gguf-py first on the path."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder / "gguf-py"), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, str(folder / "convert_hf_to_gguf.py"), str(model_dir), "--outtype", outtype]
    what = f"converting {model_dir} to {outtype} GGUF with llama.cpp's convert_hf_to_gguf.py (once; cached as {target})"
    with logged_step(log, what), _staging(target) as staging:
        done = subprocess.run(
            [*command, "--outfile", str(staging)], env=env, capture_output=True, text=True, check=False
        )
        log.debug("convert_hf_to_gguf.py: %s", done.stderr)
        if done.returncode != 0 or not staging.is_file():
            raise EvalbenchError(
                f"llama.cpp's convert_hf_to_gguf.py cannot convert {model_dir}: {_reason(done)}; "
                "valid: a checkpoint it converts, or backend.gguf_file=<an F32, F16 or BF16 GGUF of the same weights>"
            )


def _identity(path: Path) -> str:
    """Path, size and modification time of ``path``, or of a checkpoint directory's files."""
    files = (
        [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    )
    return ";".join(f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files)


@dataclass(frozen=True)
class BaseGGUF:
    """The GGUF every type is quantized from: its source, its type and how it is written."""

    source: Path
    type: str  # f32, f16 or bf16
    converter: str
    write: Callable[[Path, Path], None]  # (source, target)


def _base(model_cfg: Any, cache_dir: Path, gguf_file: str | None) -> BaseGGUF:
    """The base GGUF: de-quantized from the model's or the backend's GGUF, or converted from the HF checkpoint."""
    source = resolve_source(model_cfg)
    dequantizer = f"evalbench f32_from_gguf (gguf {metadata.version('gguf')})"
    if source.gguf_file is not None:
        if source.gguf_path is None:
            raise EvalbenchError(f"model.gguf_file needs a local model.path; {source.location!r} is a hub id")
        return BaseGGUF(source.gguf_path, "f32", dequantizer, f32_from_gguf)
    if gguf_file:
        return BaseGGUF(Path(gguf_file).expanduser().resolve(), "f32", dequantizer, f32_from_gguf)
    location = Path(checkpoint_dir(model_cfg, cache_dir)[0])
    if not location.is_dir():
        from huggingface_hub import snapshot_download

        location = Path(snapshot_download(str(location), revision=model_cfg.revision))
    folder, outtype = converter_dir(), checkpoint_type(location)
    write = functools.partial(gguf_from_hf, outtype=outtype, folder=folder)
    return BaseGGUF(location, outtype, converter_name(folder), write)


def _once(target: Path, make: Callable[[], None]) -> float:
    """Make ``target`` unless cached; return the seconds its making took (recorded beside it)."""
    record = target.with_suffix(".json")
    with FileLock(str(target) + ".lock"):
        if not (target.is_file() and record.is_file()):
            started = time.perf_counter()
            make()
            record.write_text(json.dumps({"convert_time_s": time.perf_counter() - started}), encoding="utf-8")
    return float(json.loads(record.read_text(encoding="utf-8"))["convert_time_s"])


def _importance_matrix(base_file: Path, calibration: Any, threads: int) -> tuple[Path, float]:
    """The importance matrix of ``base_file`` on ``calibration``'s tokens (computed on first use), and the seconds
    computing it took."""
    matrix = base_file.with_name(f"imatrix-{hashlib.sha256(calibration.key().encode()).hexdigest()[:16]}.npz")

    def make() -> None:
        what = f"computing llama.cpp's importance matrix of {base_file.name} on {calibration.tokens} tokens"
        with logged_step(log, f"{what} (once; cached as {matrix})"), _staging(matrix) as staging:
            imatrix.save(staging, imatrix.compute(init_llama_cpp(), base_file, calibration.windows, threads))

    return matrix, _once(matrix, make)


def prepared_gguf(
    model_cfg: Any, precision: Any, cache_dir: str | Path, gguf_file: str | None = None, threads: int = 0,
    calibration: Any = None,
) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """The GGUF file of the model at ``precision`` (a :class:`GGUFType`), made on first use, and its record fields;
    with an enabled ``calibration`` (``imatrix``), quantized with the importance matrix of its tokens."""
    llama_cpp = init_llama_cpp()
    cache_dir = Path(cache_dir).expanduser()
    base = _base(model_cfg, cache_dir, gguf_file)
    key = f"{_identity(base.source)}|{llama_cpp.__version__}|{base.converter}"
    name = base.source.stem if base.source.is_file() else base.source.name
    folder = cache_dir / "llama_cpp" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    base_file = folder / f"{base.type}.gguf"
    seconds = _once(base_file, lambda: base.write(base.source, base_file))
    model_file, matrix, fields = base_file, None, {}
    if calibration is not None and calibration.enabled:
        matrix, calibration_seconds = _importance_matrix(base_file, calibration, threads or os.cpu_count() or 1)
        fields = {"imatrix_file": str(matrix), "calibration_time_s": calibration_seconds}
    if precision.name != base.type:
        model_file = folder / (f"{precision.name}-{matrix.stem}.gguf" if matrix else f"{precision.name}.gguf")
        seconds += _once(model_file, lambda: quantize(base_file, model_file, precision.ftype, threads, matrix))
    return model_file, {
        **fields,
        "gguf_source": str(base.source),
        "gguf_base_type": base.type,
        "gguf_converter": base.converter,
        "gguf_type": precision.name,
        "model_file": str(model_file),
        "model_file_bytes": model_file.stat().st_size,
        "convert_time_s": seconds,
    }
