"""Hearth's own CPU kernels (qmatmul.cpp), compiled once as a PyTorch C++ extension.

`make install` builds them (`python -m backends.scratch.kernels`); any other install builds them on
first use. The build lands in PyTorch's extension cache (TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions) and is rebuilt only when the source changes. Without a compiler the q8
and q4 precisions run the pure PyTorch reference (backends/scratch/blockquant.py) and say so.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("qmatmul.cpp")
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


def _build() -> tuple[ModuleType | None, str | None]:
    if os.environ.get("HEARTH_NO_KERNELS"):
        return None, "HEARTH_NO_KERNELS is set"
    try:
        from torch.utils.cpp_extension import load as load_extension

        module = load_extension(
            name="hearth_qmatmul", sources=[str(SOURCE)],
            extra_cflags=["-O3", "-fno-math-errno", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
        return module, None
    except Exception as exc:  # no compiler, no headers, no ninja: the reference path still works
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        log.warning("Hearth's CPU kernels could not be built (%s); q8/q4 use the PyTorch reference", reason)
        return None, reason

