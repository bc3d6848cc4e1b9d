"""The one place that turns (backend name, model, adapter) into a loaded backend."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from assistant.errors import HearthError, ModelNotFound
from backends.base import Backend

BACKENDS = ("hf",)


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
) -> Backend:
    """Load a backend by name; errors a user can cause raise HearthError."""
    if name not in BACKENDS:
        raise HearthError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}.")
    if adapter is not None and not Path(adapter).expanduser().exists():
        raise ModelNotFound(f"adapter folder {adapter} does not exist.")
    model_dir = resolve_model(model, report)
    from backends.hf.backend import HFBackend

    return HFBackend(model_dir, adapter=Path(adapter).expanduser() if adapter else None)
