"""Prompt-lookup speculative decoding: no draft model, the text so far is the draft.

A reply often repeats what it has read (a grounded answer copies from its sources). After each
sampled token, the longest recent n-gram ending the text (prompt + reply) is looked up earlier in
the text, and the tokens that followed it there are proposed. One forward pass over the sampled
token and the k proposed ones gives the next-token logits at all k + 1 positions; the shared
sampler then picks tokens from them in order for as long as each pick equals the proposal that
was fed at that position. The first pick that differs is still a correct token (it was sampled
from the right logits), the proposals after it are dropped from the KV cache, and the loop goes on.

The sampler is called exactly once per produced token, on the same logits plain decoding would
have given it (up to floating-point order in the wider matmul), so greedy and seeded replies are
the tokens plain decoding produces; speculation only changes how many forward passes they take.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from backends.base import GenerationParams, TokenStep
from backends.sampling import Sampler

MAX_NGRAM = 3  # longest suffix looked up
MIN_NGRAM = 2  # a one-token match proposes too often wrongly to pay for its verification
MAX_DRAFT = 8  # tokens proposed per forward pass
FIRST_DRAFT = 2  # the draft length to start with


class PromptLookup:
    """An index of the n-grams of a token sequence, for proposing what followed the current suffix."""

    def __init__(self, ids: list[int], max_ngram: int = MAX_NGRAM):
        self.ids: list[int] = []
        self.max_ngram = max_ngram
        self._after: dict[tuple[int, ...], int] = {}  # n-gram -> where its latest earlier copy ended
        self.extend(ids)

    def extend(self, ids: list[int]) -> None:
        for token in ids:
            # index the n-grams ending at the previous last token: they now have a continuation
            end = len(self.ids)
            for n in range(1, min(self.max_ngram, end) + 1):
                self._after[tuple(self.ids[end - n : end])] = end
            self.ids.append(token)

    def propose(self, k: int, min_ngram: int = MIN_NGRAM) -> list[int]:
        """Up to k tokens that followed the latest earlier copy of the longest suffix n-gram."""
        if k <= 0:
            return []
        for n in range(min(self.max_ngram, len(self.ids)), min_ngram - 1, -1):
            end = self._after.get(tuple(self.ids[-n:]))
            if end is not None:
                return self.ids[end : end + k]
        return []


@dataclass
class SpeculationStats:
    """What speculation did for one reply: forward passes, proposed and accepted draft tokens."""

    passes: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def speculative_loop(
    prompt_ids: list[int],
    first_logits: torch.Tensor,
    verify: Callable[[list[int]], torch.Tensor],
    drop: Callable[[int], None],
    room: Callable[[], int],
    params: GenerationParams,
    vocab_size: int,
    stop_ids: frozenset[int],
    cancel: threading.Event | None = None,
    stats: SpeculationStats | None = None,
    max_draft: int = MAX_DRAFT,
) -> Iterator[TokenStep]:
    """decode_loop's contract (sampling.py) with speculation.

    verify(ids): feed ids to the model (appended to its cache) and return next-token logits at each
    of them, (len(ids), vocab); drop(n): remove the last n fed ids from the cache; room(): how many
    more ids the cache takes.
    """
    stats = stats if stats is not None else SpeculationStats()
    sampler = Sampler(params.sampling, vocab_size, device=first_logits.device)
    lookup = PromptLookup(prompt_ids)
    produced = 0
    size = FIRST_DRAFT  # draft length: doubled after a fully accepted draft, cut to what was accepted otherwise

    def pick(logits: torch.Tensor) -> TokenStep:
        nonlocal produced
        token_id, logprob = sampler.sample(logits).tolist()
        produced += 1
        return TokenStep(int(token_id), logprob)

    if cancel is not None and cancel.is_set():
        return
    step = pick(first_logits)
    yield step
    while step.token_id not in stop_ids and produced < params.max_new_tokens:
        lookup.extend([step.token_id])
        left = min(params.max_new_tokens - produced - 1, room() - 1)
        draft = lookup.propose(min(size, max_draft, left), MIN_NGRAM)
        rows = verify([step.token_id] + draft)
        stats.passes += 1
        stats.proposed += len(draft)
        for i in range(len(draft) + 1):
            if cancel is not None and cancel.is_set():
                return
            step = pick(rows[i])
            yield step
            if step.token_id in stop_ids or produced == params.max_new_tokens:
                return
            if i < len(draft) and step.token_id == draft[i]:
                stats.accepted += 1
                lookup.extend([step.token_id])
                continue
            drop(len(draft) - i)  # the proposals after the last accepted one were wrong
            if draft:
                size = min(2 * size, max_draft) if i == len(draft) else max(1, i)
            break
