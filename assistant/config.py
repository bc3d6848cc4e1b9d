"""Where Hearth keeps its data, and its default settings."""

from __future__ import annotations

import os
from pathlib import Path

from assistant.errors import StorageError

DEFAULT_SYSTEM_PROMPT = (
    "You are Hearth, a helpful assistant running privately on the user's computer. "
    "Answer clearly and concisely."
)
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_K = 3  # sources per grounded answer
# What happens to a grounded answer whose support score is below the threshold: its unsupported
# sentences are marked (annotate), it is retried once with a stricter instruction (regenerate),
# or replaced by the refusal (abstain).
POLICIES = ("annotate", "regenerate", "abstain")
DEFAULT_POLICY = "annotate"
# What a checked answer was asked to do; the hallucination check has a calibration per kind.
# question: answer a question from retrieved passages (every grounded chat answer); summary:
# summarise a document; data: describe structured (JSON) records; general: anything else.
GROUNDING_GENERAL = "general"
GROUNDING_QUESTION = "question"
GROUNDING_KINDS = (GROUNDING_GENERAL, GROUNDING_QUESTION, "summary", "data")


def hearth_home() -> Path:
    """The data directory: $HEARTH_HOME, default ~/.local/share/hearth."""
    env = os.environ.get("HEARTH_HOME")
    if env is not None and not env.strip():
        raise StorageError("HEARTH_HOME is set but empty: set it to a folder, or unset it for the default.")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "hearth"


def ensure_dir(path: Path) -> Path:
    """Create a directory under HEARTH_HOME, or raise a StorageError that says why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create {path}: {exc.strerror or exc}. "
            "Set HEARTH_HOME to a writable directory."
        ) from exc
    if not os.access(path, os.W_OK):
        raise StorageError(f"{path} is not writable. Set HEARTH_HOME to a writable directory.")
    return path


def models_dir() -> Path:
    """Folder holding prepared models (the converted default model among them)."""
    return hearth_home() / "models"


def history_db_path() -> Path:
    """The SQLite file with every conversation."""
    return hearth_home() / "hearth.db"
