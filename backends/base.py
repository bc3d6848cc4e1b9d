"""The backend protocol: what the conversation manager needs from any local model.

No torch here: the command line and the chat UI import this without loading the model stack.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

from backends.params import SamplingParams

if TYPE_CHECKING:
    from backends.tokenizer import ChatTokenizer


class QueueFull(Exception):
    """More requests are waiting for the model than its queue takes; retry later."""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings plus how many tokens a reply may have."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = 512  # a backend's own default; chats pass config.DEFAULT_MAX_NEW_TOKENS
    grounded: bool = False  # a grounded answer's prompt: a backend with a grounded-answer adapter applies it

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class TokenStep:
    """One generated token and its log-probability under the model."""

    token_id: int
    logprob: float


@runtime_checkable
class Backend(Protocol):
    """A local model that streams tokens for ChatML prompt ids."""

    name: str  # "hf", "scratch", ...
    model_id: str  # the model as the user would pass it to --model (a folder path)
    precision: str  # the weights' precision (registry.PRECISIONS)
    adapter: str | None  # the LoRA adapter folder applied on top, if any
    tokenizer: "ChatTokenizer"
    context_length: int

    def stream(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenStep]:
        """Yield generated tokens; stop after <|im_end|>, at max_new_tokens, or when cancelled."""
        ...


def label(backend: Backend) -> str:
    """A short display name: "hf: smollm2-135m-instruct", "+ adapter" and non-fp32 precision added."""
    text = f"{backend.name}: {Path(str(backend.model_id)).name}"
    if backend.adapter:
        text += f" + {Path(backend.adapter).name}"
    return text + (f" ({backend.precision})" if backend.precision != "fp32" else "")
