"""Export conversations as Markdown, JSON, or ChatML JSONL for finetuning."""

from __future__ import annotations

import json

from assistant import present
from assistant.records import Conversation, Message

FORMATS = ("md", "json", "chatml")


def to_markdown(conv: Conversation, messages: list[Message]) -> str:
    """A readable Markdown transcript."""
    lines = [f"# {conv.title}", "", f"*System:* {conv.system_prompt}", ""]
    for m in messages:
        who = {"user": "You", "assistant": "Assistant", "system": "System"}[m.role]
        note = "" if m.status in ("complete", "stop") else f" ({m.status})"
        lines += [f"## {who}{note}", "", m.content, ""]
        lines += _grounding(m)
    return "\n".join(lines)


def _grounding(m: Message) -> list[str]:
    """A grounded or checked reply's support line, the sources its [n] cite and its checked sentences."""
    support = present.support_line(m.checks)
    sentences = present.sentence_lines(m.checks)
    out = [f"*{support}*", ""] if support else []
    if m.sources:
        out += ["Sources:", ""] + [f"- {line}" for line in present.source_lines(m.sources)] + [""]
    if sentences:
        out += ["Checked sentences:", ""] + [f"- {line}" for line in sentences] + [""]
    return out


def to_json(conv: Conversation, messages: list[Message]) -> str:
    """The conversation with every stored field."""
    return json.dumps(
        {"conversation": conv.to_dict(), "messages": [m.to_dict() for m in messages]},
        ensure_ascii=False,
        indent=2,
    )


def to_chatml_record(conv: Conversation, messages: list[Message]) -> dict:
    """One {"messages": [...]} training example; failed or cancelled replies are left out."""
    turns = [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt else []
    for m in messages:
        if m.role == "assistant" and m.status not in ("stop", "complete"):
            continue
        turns.append({"role": m.role, "content": m.content})
    return {"messages": turns}


def export(conv: Conversation, messages: list[Message], fmt: str) -> str:
    """Text of one conversation in the chosen format (chatml: one JSONL line)."""
    if fmt == "md":
        return to_markdown(conv, messages)
    if fmt == "json":
        return to_json(conv, messages)
    if fmt == "chatml":
        return json.dumps(to_chatml_record(conv, messages), ensure_ascii=False)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")


ALL = "chatml-all"  # every conversation as ChatML JSONL: a finetuning set
SUFFIXES = {"md": "md", "json": "json", "chatml": "jsonl", ALL: "jsonl"}


def export_all(store) -> str:
    """Every stored conversation as ChatML JSONL, one training example per line."""
    return "\n".join(json.dumps(to_chatml_record(c, store.messages(c.id)), ensure_ascii=False)
                     for c in store.list_conversations())
