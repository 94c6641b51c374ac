"""The Python that exports checkpoints to OpenVINO IR: optimum-intel, in an environment of its own.

optimum-intel (the exporter OpenVINO maintains for Hugging Face models) requires a ``transformers``
older than evalbench's, so it cannot share evalbench's environment. Its environment is a small
overlay on evalbench's: a virtual environment that sees evalbench's packages (torch, openvino,
nncf) through a ``.pth`` file and holds only optimum-intel and the versions of transformers and
huggingface-hub it supports. optimum-intel is installed without its requirements, which name
``torchvision``: pip would satisfy it with a CUDA build of torch over the CPU one, and exporting
a text model never imports it.

Made once per package set in ``<cache_dir>/openvino/exporter-<digest>/`` (about 20 s), on the
first use of ``backend=openvino``; ``python -m evalbench.backends.openvino.exporter`` makes it
ahead of time (in ``$EVALBENCH_CACHE_DIR``, else ``~/.cache/evalbench``).
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

from filelock import FileLock

from evalbench.backends.cached_folder import digest
from evalbench.errors import EvalbenchError
from evalbench.progress import logged_step

OPTIMUM_INTEL = "optimum-intel==2.2.0"
# What optimum-intel 2.2.0 needs beside evalbench's packages, at versions it supports.
OVERLAY = ("optimum==2.3.0", "transformers==5.5.4", "huggingface-hub==1.21.0", "datasets==4.8.5")
READY = "evalbench-exporter-ready"
log = logging.getLogger(__name__)


def _main_site_packages() -> list[str]:
    """evalbench's environment's package folders, which the exporter environment also reads."""
    return sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})


def _pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise EvalbenchError(
            f"the OpenVINO exporter environment could not be made ({' '.join(args)}): "
            f"{lines[-1] if lines else 'pip exit status ' + str(done.returncode)}; valid: a machine that reaches "
            "the package index, or backend.exporter_python=<a Python with optimum-intel==2.2.0>"
        )


def _make(folder: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True, capture_output=True)
    python = folder / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    lines = [f"import site; site.addsitedir({path!r})" for path in _main_site_packages()]
    (site_packages / "evalbench-main.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _pip(python, "--no-deps", OPTIMUM_INTEL)
    pins = [f"torch=={version('torch')}", f"openvino=={version('openvino')}", f"nncf=={version('nncf')}"]
    _pip(python, *OVERLAY, *pins)  # torch, openvino and nncf: evalbench's own, already there
    (folder / READY).write_text(" ".join((OPTIMUM_INTEL, *OVERLAY)), encoding="utf-8")


def exporter_python(cache_dir: Path, configured: str | None = None) -> Path:
    """The Python that runs ``optimum-cli export openvino``: ``configured``, else evalbench's exporter environment."""
    if configured:
        return Path(configured).expanduser()
    packages = (OPTIMUM_INTEL, *OVERLAY, sys.version, *_main_site_packages())
    folder = Path(cache_dir).expanduser() / "openvino" / f"exporter-{digest(*packages)}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / READY).is_file():
            with logged_step(log, f"making the OpenVINO exporter environment {folder} (once; {OPTIMUM_INTEL})"):
                _make(folder)
    return folder / "bin" / "python"


@functools.cache
def exporter_versions(python: Path) -> str:
    """optimum-intel's and transformers' versions in the exporter environment (asked once per process)."""
    code = "from importlib.metadata import version as v; print(v('optimum-intel'), v('transformers'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EvalbenchError(
            f"backend.exporter_python={str(python)!r} has no optimum-intel; valid: a Python with optimum-intel "
            "installed, or null (evalbench's exporter environment)"
        )
    intel, transformers = done.stdout.split()
    return f"optimum-intel {intel}, transformers {transformers}"


if __name__ == "__main__":
    import os

    print(exporter_python(Path(os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench"))))
