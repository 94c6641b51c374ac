"""The GGUF files the llama.cpp backend runs: an F32 GGUF of the model, then llama.cpp's quantizer.

The F32 GGUF is made once per model (de-quantized from the model's GGUF, or written from a
Hugging Face Llama checkpoint); every GGUF type is quantized from it by
``llama_model_quantize``, so all types start from the same weights the torch backend loads.
Files are cached under ``<cache_dir>/llama_cpp/<source>-<digest>/``, each written once behind
a file lock and moved into place whole.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from filelock import FileLock

from evalbench.errors import EvalbenchError
from evalbench.model.loader import checkpoint_dir
from evalbench.model.source import resolve_source

# A tensor to write: its GGUF name, numpy shape, and a function returning its float32 data.
Tensor = tuple[str, tuple[int, ...], Callable[[], np.ndarray]]
TOKEN_TYPES = {"normal": 1, "control": 3, "user_defined": 4, "unused": 5}  # gguf.TokenType values
GGML_LOG_LEVEL_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
_LOG_CALLBACKS: list[Any] = []
_CAPTURES: list[list[str]] = []
log = logging.getLogger(__name__)
SKIPPED_FIELDS = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE, gguf.Keys.General.ALIGNMENT}


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


def _unsupported(model_dir: Path, what: str) -> EvalbenchError:
    return EvalbenchError(
        f"{model_dir} is {what}: llama_cpp can write a GGUF only for Llama-architecture HF checkpoints "
        "(LlamaForCausalLM, byte-level BPE tokenizer.json); pass backend.gguf_file=<an F32 or F16 GGUF of the "
        "same weights, e.g. made by llama.cpp's convert_hf_to_gguf.py>"
    )


def _llama_config(model_dir: Path) -> dict[str, Any]:
    """The checkpoint's config.json, checked to describe a plain Llama model."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    architectures = config.get("architectures") or []
    if config.get("model_type") != "llama" or architectures != ["LlamaForCausalLM"]:
        raise _unsupported(model_dir, f"{architectures or config.get('model_type') or 'not a HF checkpoint'}")
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise _unsupported(model_dir, f"a Llama with rope_type={rope['rope_type']!r}")
    return config


def _llama_metadata(config: dict[str, Any], model_dir: Path) -> Callable[[gguf.GGUFWriter], None]:
    """The llama hyper-parameters and tokenizer, as ``convert_hf_to_gguf.py`` writes them."""
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope = config.get("rope_parameters") or {}

    def add(writer: gguf.GGUFWriter) -> None:
        writer.add_name(model_dir.name)
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_block_count(config["num_hidden_layers"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(n_head)
        writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
        writer.add_rope_freq_base(float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0))
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(head_dim)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        _add_bpe_tokenizer(writer, model_dir, config["vocab_size"])

    return add


def _add_bpe_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    """tokenizer.json's byte-level BPE vocabulary as ``tokenizer.ggml.model = gpt2``, padded to ``vocab_size``."""
    path = model_dir / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise _unsupported(model_dir, "without a byte-level BPE tokenizer.json")
    tokens: dict[int, tuple[str, int]] = {i: (t, TOKEN_TYPES["normal"]) for t, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        kind = "control" if added.get("special") else "user_defined"
        tokens[added["id"]] = (added["content"], TOKEN_TYPES[kind])
    if max(tokens) >= vocab_size:
        raise EvalbenchError(f"{path} has token id {max(tokens)}, beyond the model's vocab_size {vocab_size}")
    padded = [tokens.get(i, (f"[PAD{i}]", TOKEN_TYPES["unused"])) for i in range(vocab_size)]
    pre = spec.get("pre_tokenizer") or {}
    plain_byte_level = pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2" if plain_byte_level else "default")
    writer.add_token_list([text for text, _ in padded])
    writer.add_token_types([kind for _, kind in padded])
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


def _permute_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half RoPE layout to llama.cpp's interleaved one."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _hf_tensor(path: Path, name: str, permute_heads: int | None) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        data = handle.get_tensor(name).float().numpy()
    return _permute_rows(data, permute_heads) if permute_heads else data


def _llama_tensors(config: dict[str, Any], model_dir: Path) -> list[Tensor]:
    """The checkpoint's tensors under their GGUF names (q/k permuted, the tied output left out)."""
    from safetensors import safe_open

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    n_head = config["num_attention_heads"]
    heads = {"q_proj": n_head, "k_proj": config.get("num_key_value_heads") or n_head}
    tied = config.get("tie_word_embeddings", False)
    tensors: list[Tensor] = []
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise _unsupported(model_dir, "without safetensors weights")
    for path in files:
        with safe_open(path, framework="pt") as handle:
            keys = handle.keys()
            names = [(n, tuple(handle.get_slice(n).get_shape())) for n in keys]
        for name, shape in names:
            if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
                continue
            gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise _unsupported(model_dir, f"a checkpoint with tensor {name!r}")
            permute = next((h for proj, h in heads.items() if f".{proj}." in name), None)
            tensors.append((gguf_name, shape, functools.partial(_hf_tensor, path, name, permute)))
    return tensors


def f32_from_hf_llama(model_dir: Path, target: Path) -> None:
    """Write ``target``: an F32 GGUF of the Hugging Face Llama checkpoint in ``model_dir``."""
    config = _llama_config(model_dir)
    _write_gguf(target, "llama", _llama_metadata(config, model_dir), _llama_tensors(config, model_dir))


def quantize(f32: Path, target: Path, ftype: str, threads: int) -> None:
    """Write ``target`` from the F32 GGUF ``f32`` with ``llama_model_quantize`` (``ftype``: a llama_cpp constant)."""
    llama_cpp = init_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = threads
    with _staging(target) as staging:
        status = llama_cpp.llama_model_quantize(str(f32).encode(), str(staging).encode(), ctypes.byref(params))
        if status != 0:
            raise EvalbenchError(f"llama_model_quantize could not write {ftype} from {f32} (returned {status})")


def _identity(path: Path) -> str:
    """Path, size and modification time of ``path``, or of a checkpoint directory's weights and configs."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".json", ".safetensors"))
    return ";".join(f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files)


def _f32_source(model_cfg: Any, cache_dir: Path, gguf_file: str | None) -> tuple[Path, Callable[[Path, Path], None]]:
    """Where the F32 GGUF comes from, and the function writing it: the model's GGUF, the backend's, or the HF dir."""
    source = resolve_source(model_cfg)
    if source.gguf_file is not None:
        if source.gguf_path is None:
            raise EvalbenchError(f"model.gguf_file needs a local model.path; {source.location!r} is a hub id")
        return source.gguf_path, f32_from_gguf
    if gguf_file:
        return Path(gguf_file).expanduser().resolve(), f32_from_gguf
    location = Path(checkpoint_dir(model_cfg, cache_dir)[0])
    if not location.is_dir():
        from huggingface_hub import snapshot_download

        location = Path(snapshot_download(str(location), revision=model_cfg.revision))
    return location, f32_from_hf_llama


def _once(target: Path, make: Callable[[], None]) -> float:
    """Make ``target`` unless cached; return the seconds its making took (recorded beside it)."""
    record = target.with_suffix(".json")
    with FileLock(str(target) + ".lock"):
        if not (target.is_file() and record.is_file()):
            started = time.perf_counter()
            make()
            record.write_text(json.dumps({"convert_time_s": time.perf_counter() - started}), encoding="utf-8")
    return float(json.loads(record.read_text(encoding="utf-8"))["convert_time_s"])


def prepared_gguf(
    model_cfg: Any, precision: Any, cache_dir: str | Path, gguf_file: str | None = None, threads: int = 0
) -> tuple[Path, dict[str, Any]]:
    """The GGUF file of the model at ``precision`` (a :class:`GGUFType`), made on first use, and its record fields."""
    llama_cpp = init_llama_cpp()
    cache_dir = Path(cache_dir).expanduser()
    source, write_f32 = _f32_source(model_cfg, cache_dir, gguf_file)
    digest = hashlib.sha256(f"{_identity(source)}|{llama_cpp.__version__}".encode()).hexdigest()[:16]
    folder = cache_dir / "llama_cpp" / f"{source.stem if source.is_file() else source.name}-{digest}"
    f32 = folder / "f32.gguf"
    seconds = _once(f32, lambda: write_f32(source, f32))
    model_file = f32
    if precision.name != "f32":
        model_file = folder / f"{precision.name}.gguf"
        seconds += _once(model_file, lambda: quantize(f32, model_file, precision.ftype, threads))
    return model_file, {
        "gguf_source": str(source),
        "gguf_type": precision.name,
        "model_file": str(model_file),
        "model_file_bytes": model_file.stat().st_size,
        "convert_time_s": seconds,
    }
