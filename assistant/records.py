"""Plain data kept in the history database: conversations and their messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone


def now_iso() -> str:
    """Current UTC time, ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Timings:
    """How a reply was produced."""

    ttft_s: float | None = None  # time to first token, from the start of generation
    decode_tok_s: float | None = None  # tokens per second after the first token
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Message:
    """One stored message. `status` is "complete" for user and system turns; for replies it is
    the finish reason: "stop", "length", "cancelled" or "error", and "interrupted" while it is
    being generated (what stays stored when the process dies before the reply ends)."""

    role: str
    content: str
    status: str = "complete"
    backend: str | None = None
    model: str | None = None
    settings: dict = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    sources: list = field(default_factory=list)
    checks: dict | None = None
    created_at: str = field(default_factory=now_iso)
    id: int | None = None
    conversation_id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Conversation:
    """A stored conversation's header (its messages are loaded separately)."""

    title: str
    system_prompt: str
    backend: str | None = None
    model: str | None = None
    settings: dict = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)
