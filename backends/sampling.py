"""The one sampler: every backend that runs its own decode loop picks tokens here.

Order of operations on the logits of the next position:
penalties (frequency, presence, repetition) -> temperature -> top-k -> top-p -> min-p -> draw.
Penalties count the tokens generated so far in this reply. Temperature 0 means greedy.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import torch

from backends.base import GenerationParams, TokenStep
from backends.params import SamplingParams


def apply_penalties(
    logits: torch.Tensor, counts: torch.Tensor, params: SamplingParams
) -> torch.Tensor:
    """The book's penalties: o_j -= alpha * count_j; o_j -= gamma if j occurred; plus CTRL's."""
    out = logits
    if params.frequency_penalty:
        out = out - params.frequency_penalty * counts
    present = counts > 0
    if params.presence_penalty:
        out = out - params.presence_penalty * present.to(out.dtype)
    if params.repetition_penalty != 1.0:
        penalised = torch.where(
            out > 0, out / params.repetition_penalty, out * params.repetition_penalty
        )
        out = torch.where(present, penalised, out)
    return out


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Next-token distribution after temperature and the top-k, top-p and min-p filters."""
    logits = logits.float()
    if params.greedy:
        return torch.zeros_like(logits).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_k and params.top_k < probs.shape[-1]:
        kth = torch.topk(probs, params.top_k, dim=-1).values[..., -1:]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        cumulative = torch.cumsum(sorted_p, dim=-1)
        # Keep every token whose preceding mass is below p: the one that crosses p stays.
        keep_sorted = (cumulative - sorted_p) < params.top_p * cumulative[..., -1:]
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = torch.where(keep, probs, torch.zeros_like(probs))
    if params.min_p > 0:
        floor = params.min_p * probs.max(dim=-1, keepdim=True).values
        probs = torch.where(probs >= floor, probs, torch.zeros_like(probs))
    return probs / probs.sum(dim=-1, keepdim=True)


class Sampler:
    """Stateful sampler for one reply: seeded RNG and counts of generated tokens."""

    def __init__(self, params: SamplingParams, vocab_size: int, device: torch.device | str = "cpu"):
        self.params = params
        self.counts = torch.zeros(vocab_size, device=device)
        self._needs_counts = bool(
            params.frequency_penalty or params.presence_penalty or params.repetition_penalty != 1.0
        )
        self.generator = torch.Generator(device=device)
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """Pick the next token from 1-D logits.

        Returns a 2-element float tensor on the logits' device: (token id, log-probability of
        that token under the model's unmodified distribution). Reading it is the only host sync.
        """
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        if self._needs_counts:
            logits = apply_penalties(logits, self.counts, self.params)
        if self.params.greedy:
            token = logits.argmax(-1, keepdim=True)
        else:
            probs = probabilities(logits, self.params)
            token = torch.multinomial(probs, 1, generator=self.generator)
        if self._needs_counts:
            self.counts.index_add_(0, token, torch.ones(1, device=self.counts.device))
        return torch.cat([token.double(), logprobs.gather(-1, token).double()])


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
