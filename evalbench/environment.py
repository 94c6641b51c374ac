"""The machine and build a run ran on: every record carries this fingerprint."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import psutil
import torch
import transformers

# ISA features that decide which CPU kernels can run fast.
ISA_FLAGS = frozenset(
    "sse4_2 avx avx2 fma f16c avx_vnni avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 "
    "amx_bf16 amx_int8 amx_tile asimd asimddp sve sve2 bf16 i8mm".split()
)


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    except OSError:
        pass
    return model, sorted(flags.intersection(ISA_FLAGS))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def fingerprint() -> dict[str, object]:
    """CPU model and ISA flags, cores, memory, library versions and a short machine id."""
    from evalbench import __version__

    cpu_model, isa = _cpuinfo()
    machine = {
        "cpu_model": cpu_model,
        "cpu_isa": " ".join(isa),
        "cpu_arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "hostname": platform.node(),
    }
    machine_id = hashlib.sha256(repr(sorted(machine.items())).encode()).hexdigest()[:12]
    return {
        "machine_id": machine_id,
        **machine,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_quantized_engine": torch.backends.quantized.engine,
        "transformers": transformers.__version__,
        "evalbench": __version__,
        "evalbench_git_commit": _git_commit(),
    }
