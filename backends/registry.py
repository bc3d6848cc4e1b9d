"""The one place that turns (backend name, model, adapter) into a loaded backend."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from assistant.errors import HearthError, ModelNotFound
from backends.base import Backend

BACKENDS = ("hf", "scratch")


def resolve_model(model: str | Path | None, report: Callable[[str], None] | None = None) -> Path:
    """A model folder path; None means the bundled default (prepared on first use)."""
    if model is None:
        from backends.hf.default_model import ensure_default_model

        return ensure_default_model(report)
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFound(f"model folder {path} does not exist.")
    return path


def load_backend(
    name: str = "hf",
    model: str | Path | None = None,
    adapter: str | Path | None = None,
    report: Callable[[str], None] | None = None,
    precision: str = "fp32",
) -> Backend:
    """Load a backend by name; errors a user can cause raise HearthError."""
    if name not in BACKENDS:
        raise HearthError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}.")
    if adapter is not None and not Path(adapter).expanduser().exists():
        raise ModelNotFound(f"adapter folder {adapter} does not exist.")
    model_dir = resolve_model(model, report)
    if name == "scratch":
        if adapter is not None:
            raise HearthError("the scratch backend takes merged weights: run `hearth train merge` first.")
        from backends.scratch.backend import PRECISIONS, ScratchBackend

        if precision not in PRECISIONS:
            raise HearthError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")
        return ScratchBackend(model_dir, precision=precision)
    if precision != "fp32":
        raise HearthError("--precision applies to the scratch backend; the hf backend picks bf16 on GPU itself.")
    from backends.hf.backend import HFBackend

    return HFBackend(model_dir, adapter=Path(adapter).expanduser() if adapter else None)
