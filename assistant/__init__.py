"""Hearth's conversation core: ChatML, conversations, storage, configuration and the CLI."""

from assistant import offline as _offline  # noqa: F401  (must run before any HF import)
