"""Supervised finetuning examples: conversations rendered with the one ChatML template.

Labels are -100 everywhere except the assistant's tokens: each reply and its <|im_end|>.
Formats: {"messages": [...]} (what the chat UI exports), {"instruction", "solution"} (the book),
and Alpaca's {"instruction", "input", "output"}; JSONL or a JSON list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from assistant import chatml
from assistant.errors import HearthError
from assistant.files import read_located_records

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


ROLES = ("system", "user", "assistant")


def to_messages(record: dict, system: str | None = None) -> list[dict]:
    """A record in any supported format as ChatML messages."""
    if "messages" in record:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    elif "instruction" in record and ("solution" in record or "output" in record):
        prompt = record["instruction"]
        if record.get("input"):
            prompt = f"{prompt}\n\n{record['input']}"
        history = record.get("history") or []
        if isinstance(history, str):  # some Alpaca-style sets store it as a JSON string
            history = json.loads(history) if history.strip() else []
        messages = [{"role": role, "content": text} for pair in history
                    for role, text in zip(("user", "assistant"), pair)]
        messages += [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": record.get("solution", record.get("output"))}]
    else:
        raise ValueError("expected 'messages', or 'instruction' with 'solution' or 'output'")
    for m in messages:
        if m["role"] not in ROLES:
            raise ValueError(f"unknown role {m['role']!r}; use {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"a {m['role']} message's content must be text, not {type(m['content']).__name__}")
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def encode_example(messages: list[dict], tokenizer, max_len: int) -> Example:
    """input_ids and labels (assistant tokens only), cut to max_len."""
    enc = chatml.encode(messages, tokenizer)
    ids = enc.ids[:max_len]
    labels = [i if m else IGNORE for i, m in zip(ids, enc.assistant_mask[:max_len])]
    return Example(ids, labels)


def load_examples(path: Path, tokenizer, max_len: int, system: str | None = None,
                  limit: int | None = None) -> list[Example]:
    """Every example of the file; one with no supervised token is an error naming it."""
    examples = []
    for where, record in read_located_records(path):
        if limit is not None and len(examples) >= limit:
            break
        try:
            messages = to_messages(record, system)
        except (ValueError, KeyError, TypeError) as exc:
            raise HearthError(f"{path} {where}: {exc}") from None
        example = encode_example(messages, tokenizer, max_len)
        if all(label == IGNORE for label in example.labels):
            raise HearthError(f"{path} {where} has no assistant tokens to learn from "
                              f"(no assistant reply, or it starts after {max_len} tokens)")
        examples.append(example)
    if not examples:
        raise HearthError(f"{path} has no examples")
    return examples


def collate(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, labels, attention_mask), right-padded."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return ids, labels, mask
