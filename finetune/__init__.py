"""Training scripts that produce Hearth's backends."""

from assistant import offline as _offline  # noqa: F401  (must run before any HF import)
