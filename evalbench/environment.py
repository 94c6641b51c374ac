"""The machine and build a run ran on: every record carries this fingerprint.

``machine_id`` names the hardware (CPU model and instruction sets, cores, memory), not the
host: identical containers or cluster nodes share it, so their records resume and group
together; the host name is recorded beside it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

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


# The fingerprint's fields that identify the hardware; memory counts in whole GiB, so that nodes whose
# firmware reserves a few MB more or less are still one machine.
HARDWARE_KEYS = ("cpu_model", "cpu_isa", "cpu_arch", "logical_cores", "physical_cores", "memory_bytes")


def machine_id(env: Mapping[str, Any]) -> str | None:
    """A short hash of the hardware fields of ``env`` (a fingerprint or a record's ``env``); None if one is absent."""
    if any(key not in env for key in HARDWARE_KEYS):
        return None
    hardware = {key: env[key] for key in HARDWARE_KEYS}
    hardware["memory_bytes"] = round((env["memory_bytes"] or 0) / 2**30)
    return hashlib.sha256(repr(sorted(hardware.items())).encode()).hexdigest()[:12]


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
    """CPU model and ISA flags, cores, memory, host name, library versions and the hardware's machine id."""
    import torch  # here, not above: results.py reads machine ids without loading torch
    import transformers

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
    return {
        "machine_id": machine_id(machine),
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
