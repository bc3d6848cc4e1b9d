"""Inference engine for DecoderLanguageModel: a pre-allocated KV cache with prefix reuse.

Kept apart from the model's training path: the model only sees a LayerCache to append to.
The engine remembers which token ids its cache holds; a new prompt reuses the longest common
prefix and prefills only the rest, so a follow-up turn does not re-read the whole chat, and
an edited or regenerated turn rolls the cache back to the shared prefix.
"""

from __future__ import annotations

import threading
from typing import Iterator

import torch

from backends.base import GenerationParams, TokenStep, decode_loop
from backends.scratch.model import DecoderLanguageModel


class LayerCache:
    """One layer's keys and values: (batch, kv_heads, max_len, head_dim), filled up to `length`."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        self.k = torch.zeros(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new (already rotated) keys and values; return views of everything cached."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise RuntimeError(f"KV cache full: {end} > {self.k.shape[2]} positions")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class Engine:
    """Prefill + single-token decode over a DecoderLanguageModel, batch 1."""

    def __init__(self, model: DecoderLanguageModel, max_len: int | None = None):
        self.model = model.eval()
        config = model.config
        self.max_len = min(max_len or config.context_length, config.context_length)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        dtype = model.embedding.weight.dtype
        self.caches = [
            LayerCache(1, config.num_kv_heads, self.max_len, config.head_dim, dtype, self.device)
            for _ in range(config.num_blocks)
        ]
        self.cached_ids: list[int] = []  # the tokens whose keys/values the cache holds
        self.last_prefill_tokens = 0  # how many prompt tokens the last prefill computed

    def _rollback(self, length: int) -> None:
        for cache in self.caches:
            cache.length = length
        del self.cached_ids[length:]

    @torch.inference_mode()
    def _forward(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        start = len(self.cached_ids)
        x = ids if isinstance(ids, torch.Tensor) else torch.tensor(ids, device=self.device)
        logits = self.model(x.view(1, -1), start=start, caches=self.caches)
        return logits[0, -1]

    def prefill(self, prompt_ids: list[int]) -> torch.Tensor:
        """Fill the cache for the prompt (reusing a shared prefix); return last-position logits."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        if len(prompt_ids) > self.max_len:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens exceeds the cache ({self.max_len})")
        common = 0
        limit = min(len(self.cached_ids), len(prompt_ids) - 1)  # recompute at least one token
        while common < limit and self.cached_ids[common] == prompt_ids[common]:
            common += 1
        self._rollback(common)
        rest = prompt_ids[common:]
        logits = self._forward(rest)
        self.cached_ids.extend(rest)
        self.last_prefill_tokens = len(rest)
        return logits

    def step(self, token: torch.Tensor, token_id: int) -> torch.Tensor:
        """Feed one sampled token (a 1-element tensor left on the device); return next logits."""
        if len(self.cached_ids) >= self.max_len:
            raise RuntimeError("KV cache full")
        logits = self._forward(token)
        self.cached_ids.append(token_id)
        return logits

    def reset(self) -> None:
        """Forget everything cached."""
        self._rollback(0)

    def generate(self, prompt_ids: list[int], params: GenerationParams,
                 stop_ids: frozenset[int], cancel: threading.Event | None = None) -> Iterator[TokenStep]:
        """Stream tokens for a prompt with the shared sampler and decode loop."""
        room = self.max_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room in the cache ({self.max_len})")
        params = GenerationParams(params.sampling, min(params.max_new_tokens, room))
        first = self.prefill(prompt_ids)
        sampled: list[int] = []  # the id decode_loop just yielded, fed back by the next step

        def next_logits(token: torch.Tensor) -> torch.Tensor:
            return self.step(token, sampled.pop())

        for step in decode_loop(first, next_logits, params, self.model.config.vocab_size, stop_ids, cancel):
            sampled.append(step.token_id)
            yield step
