"""Pluggable local model backends that stream tokens from ChatML prompt ids."""

from assistant import offline as _offline  # noqa: F401  (must run before any HF import)
