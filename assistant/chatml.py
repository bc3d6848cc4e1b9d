"""The one ChatML template: every prompt the backends see and every training example.

ChatML is Hearth's format and the default; a tokenizer that carries a chat template of its own
(Llama 3, Gemma, Mistral...: backends/chat_template.py) renders with that one, through `encode` too.

A message renders as ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; a prompt that wants a
reply ends with ``<|im_start|>assistant\\n``. Token ids are built segment by segment: the control
tokens are inserted by id and the text between them is encoded as plain text, so text that spells
``<|im_start|>`` stays ordinary characters. This matches how a Hugging Face tokenizer splits the
rendered string at its special tokens, so ids and text agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

from backends.tokenizer import IM_END, IM_START

ROLES = ("system", "user", "assistant")


class _Encoder(Protocol):
    im_start_id: int
    im_end_id: int

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation as the model sees it."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {ROLES}")


@dataclass
class EncodedChat:
    """Token ids of a rendered conversation and which of them are assistant output."""

    ids: list[int] = field(default_factory=list)
    assistant_mask: list[bool] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # ids per message (the generation prompt counts with the last)

    def extend(self, ids: list[int], supervised: bool) -> None:
        self.ids.extend(ids)
        self.assistant_mask.extend([supervised] * len(ids))


def as_messages(messages: Iterable[ChatMessage | dict]) -> list[ChatMessage]:
    """Accept ChatMessage objects or {"role", "content"} dicts."""
    out = []
    for m in messages:
        out.append(m if isinstance(m, ChatMessage) else ChatMessage(m["role"], m["content"]))
    return out


def render(messages: Iterable[ChatMessage | dict], add_generation_prompt: bool = False) -> str:
    """ChatML text of the messages, optionally ending with an open assistant turn."""
    parts = [f"{IM_START}{m.role}\n{m.content}{IM_END}\n" for m in as_messages(messages)]
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def encode_message(message: ChatMessage, tokenizer: _Encoder) -> EncodedChat:
    """Ids of one rendered message; the reply text and its <|im_end|> are marked as assistant."""
    out = EncodedChat()
    out.extend([tokenizer.im_start_id] + tokenizer.encode(f"{message.role}\n"), False)
    supervised = message.role == "assistant"
    out.extend(tokenizer.encode(message.content), supervised)
    out.extend([tokenizer.im_end_id], supervised)
    out.extend(tokenizer.encode("\n"), False)
    return out


def generation_prompt(tokenizer: _Encoder) -> list[int]:
    """Ids that open the assistant's turn."""
    return [tokenizer.im_start_id] + tokenizer.encode("assistant\n")


def encode(
    messages: Iterable[ChatMessage | dict], tokenizer: _Encoder, add_generation_prompt: bool = False
) -> EncodedChat:
    """Ids (and assistant mask) of the rendered messages: the tokenizer's own chat template where it
    has one (`tokenizer.template`), else ChatML, the concatenation of encode_message."""
    template = getattr(tokenizer, "template", None)
    if template is not None:
        return template.encode(messages, add_generation_prompt)
    out = EncodedChat()
    for m in as_messages(messages):
        part = encode_message(m, tokenizer)
        out.ids.extend(part.ids)
        out.assistant_mask.extend(part.assistant_mask)
        out.lengths.append(len(part.ids))
    if add_generation_prompt:
        opening = generation_prompt(tokenizer)
        out.extend(opening, False)
        if out.lengths:
            out.lengths[-1] += len(opening)
    return out
