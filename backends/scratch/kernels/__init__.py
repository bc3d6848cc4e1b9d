"""Hearth's own CPU kernels (qmatmul.cpp: q8/q4; ggml.cpp: GGUF's block types and the decode step), compiled once as a PyTorch C++ extension.

`make install` builds them (`python -m backends.scratch.kernels`); any other install builds them on
first use. A build goes to a private temporary folder and is renamed, complete, to a folder of
PyTorch's extension cache (TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions) named by the
source, flags and torch version; later runs import the finished module from there directly. So a
build killed halfway leaves nothing that blocks or breaks the next run (PyTorch's own build lock
would), and checkouts with the same source share one build. Without a compiler the q8 and q4
precisions run the pure PyTorch reference (backends/scratch/blockquant.py) and say so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = [HERE / "qmatmul.cpp", HERE / "ggml.cpp"]  # compiled into one module
HEADERS = [HERE / "kernels.h"]
_lock = threading.Lock()
_state: dict = {}


def load() -> ModuleType | None:
    """The compiled kernels, building them on first use; None (and the reason in why_not()) when they
    cannot be built here."""
    with _lock:
        if "module" not in _state:
            _state["module"], _state["error"] = _build()
        return _state["module"]


def why_not() -> str | None:
    """Why the compiled kernels are unavailable (None when they load)."""
    load()
    return _state["error"]


def describe() -> str:
    """One line for reports: which kernel path the q8/q4 precisions run."""
    module = load()
    if module is None:
        return f"PyTorch reference (no compiled kernels: {why_not()})"
    return f"Hearth kernels ({module.instruction_set()})"


NAME = "hearth_qmatmul"
CFLAGS = ["-O3", "-fno-math-errno", "-fopenmp"]
LDFLAGS = ["-fopenmp"]


def build_folder() -> Path:
    """Where the finished build of this source, these flags and this torch lives."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    key = hashlib.sha256(b"".join(f.read_bytes() for f in SOURCES + HEADERS)
                         + " ".join(CFLAGS + LDFLAGS + [torch.__version__]).encode())
    return Path(get_default_build_root()) / f"{NAME}-{key.hexdigest()[:16]}"


def _import(folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, folder / f"{NAME}.so")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(folder: Path) -> None:
    """Build in a private folder next to `folder`, then rename it into place (the first finished
    build wins; a concurrent one is discarded)."""
    from torch.utils.cpp_extension import load as load_extension

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{folder.name}.building-", dir=folder.parent))
    try:
        for f in SOURCES + HEADERS:  # the same paths in every build: no rebuild per checkout
            shutil.copy(f, work / f.name)
        load_extension(name=NAME, sources=[str(work / f.name) for f in SOURCES], extra_cflags=CFLAGS,
                       extra_ldflags=LDFLAGS, build_directory=str(work), verbose=False)
        try:
            work.rename(folder)
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build() -> tuple[ModuleType | None, str | None]:
    if os.environ.get("HEARTH_NO_KERNELS"):
        return None, "HEARTH_NO_KERNELS is set"
    try:
        folder = build_folder()
        if not (folder / f"{NAME}.so").is_file():
            log.info("building Hearth's CPU kernels (once, about a minute)")
            _compile(folder)
        return _import(folder), None
    except Exception as exc:  # no compiler, no headers, no ninja: the reference path still works
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        log.warning("Hearth's CPU kernels could not be built (%s); q8/q4 use the PyTorch reference", reason)
        return None, reason

