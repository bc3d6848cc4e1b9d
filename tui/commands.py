"""Slash commands: one table used by the input's completion, the palette and /help."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.config import POLICIES
from assistant.export import ALL, FORMATS
from backends.params import PRESETS
from backends.registry import BACKENDS


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    help: str


COMMANDS = [
    Command("/new", "", "start a new conversation"),
    Command("/system", "TEXT", "set this conversation's system prompt (no text: show it)"),
    Command("/preset", "|".join(PRESETS), "sampling preset"),
    Command("/temp", "VALUE", "sampling temperature (0 = greedy)"),
    Command("/model", "PATH|NAME|default", "model folder, .gguf file or registered name for this conversation"),
    Command("/backend", "|".join(BACKENDS), "switch backend (allowed mid-chat)"),
    Command("/adapter", "PATH|off", "LoRA adapter (hf backend)"),
    Command("/docs", "COLLECTION|off", "answer from a document collection"),
    Command("/attach", "FILE...", "answer from these files too (no collection needed)"),
    Command("/detach", "", "stop answering from attached files"),
    Command("/sources", "", "show the sources of the last answer"),
    Command("/check", "|".join((*POLICIES, "on", "off")),
            "what to do with unsupported grounded answers; on/off checks answers without documents"),
    Command("/verdict", "N right|wrong", "say whether the check got sentence N of the last reply right "
                                          "(stored; `hearth train grounding --feedback` learns from it)"),
    Command("/regen", "", "regenerate the last reply"),
    Command("/edit", "", "edit and resend the last message"),
    Command("/export", "|".join((*FORMATS, ALL)) + " [FILE]", "export this conversation (or all as ChatML JSONL)"),
    Command("/clear", "", "delete every message of this conversation"),
    Command("/rename", "TITLE", "rename this conversation"),
    Command("/delete", "", "delete this conversation"),
    Command("/delmsg", "", "delete the last message"),
    Command("/copy", "[code]", "copy the last reply (or its last code block)"),
    Command("/help", "", "keys and commands"),
]
NAMES = [c.name for c in COMMANDS]

KEYS = [
    ("Enter", "send"), ("Ctrl+J / Shift+Enter", "new line"), ("Up (empty input)", "recall the previous prompt"),
    ("Esc", "stop the reply (keeps the partial text)"), ("Ctrl+N", "new conversation"),
    ("Ctrl+R", "regenerate"), ("Ctrl+E", "edit and resend the last message"), ("F2", "rename conversation"),
    ("Ctrl+F", "search conversations"), ("Ctrl+P", "command palette"), ("F1", "help"), ("Ctrl+Q", "quit"),
    ("Tab (after /)", "complete a command"),
]


def complete(prefix: str) -> list[str]:
    """Commands starting with the typed prefix."""
    return [n for n in NAMES if n.startswith(prefix)]


def parse(text: str) -> tuple[str, str] | None:
    """(command, argument text) if text is a slash command, else None."""
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text.strip().partition(" ")
    return name, arg.strip()


def help_markdown() -> str:
    """The /help and F1 text."""
    lines = ["# Hearth", "", "## Keys", "", "| key | action |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in KEYS]
    lines += ["", "## Commands", "", "| command | what it does |", "|---|---|"]
    lines += [f"| `{c.name}{' ' + c.args if c.args else ''}` | {c.help} |" for c in COMMANDS]
    return "\n".join(lines)
