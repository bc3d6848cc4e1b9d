"""Retrieval over the user's local documents."""

from assistant import offline as _offline  # noqa: F401  (must run before any HF import)
