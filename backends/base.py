"""The backend protocol: what the conversation manager needs from any local model."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, runtime_checkable

import torch

from backends.sampling import Sampler, SamplingParams
from backends.tokenizer import ChatTokenizer


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings plus how many tokens a reply may have."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = 512

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
    model_id: str  # what the user would pass as --model, for the record
    tokenizer: ChatTokenizer
    context_length: int

    def stream(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenStep]:
        """Yield generated tokens; stop after <|im_end|>, at max_new_tokens, or when cancelled."""
        ...


def decode_loop(
    first_logits: torch.Tensor,
    next_logits: Callable[[torch.Tensor], torch.Tensor],
    params: GenerationParams,
    vocab_size: int,
    stop_ids: frozenset[int],
    cancel: threading.Event | None = None,
) -> Iterator[TokenStep]:
    """The shared decode loop: sample, yield, feed the token back, until a stop condition.

    `first_logits` are the prefill's last-position logits; `next_logits(token)` runs one decode
    step for a 1-element id tensor and returns the next 1-D logits.
    """
    sampler = Sampler(params.sampling, vocab_size, device=first_logits.device)
    logits = first_logits
    for produced in range(params.max_new_tokens):
        if cancel is not None and cancel.is_set():
            return
        picked = sampler.sample(logits)
        token_id, logprob = picked.tolist()  # the one host sync per token
        token_id = int(token_id)
        yield TokenStep(token_id, logprob)
        if token_id in stop_ids or produced + 1 == params.max_new_tokens:
            return
        logits = next_logits(picked[:1].long())
