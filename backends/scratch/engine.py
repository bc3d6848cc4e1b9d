"""Inference engine for DecoderLanguageModel: a pre-allocated KV cache with prefix reuse.

Kept apart from the model's training path: LayerCache implements the model's KVCache protocol.
The engine remembers which token ids its cache holds; a new prompt reuses the longest common
prefix and prefills only the rest, so a follow-up turn does not re-read the whole chat, and
an edited or regenerated turn rolls the cache back to the shared prefix.

On a GPU a decode step is one CUDA graph replay: launching a 135M model's ~300 small kernels one
by one from Python costs more than running them. A graph needs fixed shapes and addresses, so the
captured step reads its token and position from device tensors, writes the new key and value at
that position, and attends over a fixed window of the cache with the later slots masked; one graph
is captured per window size (powers of two), the first time a step needs it.
"""

from __future__ import annotations

import threading
from typing import Iterator

import torch

from backends.base import GenerationParams, TokenStep
from backends.sampling import decode_loop
from backends.speculation import SpeculationStats, speculative_loop
from backends.scratch import native_step
from backends.scratch.model import DecoderLanguageModel

MIN_WINDOW = 256  # the smallest cache window a fixed-shape decode step attends over
NATIVE_PREFILL_MAX = 64  # q8/q4: prefills up to this many new tokens run through the step kernels


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


class _WindowView:
    """A LayerCache as the fixed-shape decode step sees it: the new key and value go to the slot
    held in a device tensor, and attention reads the first `window` slots (later ones are masked)."""

    def __init__(self, cache: LayerCache, position: torch.Tensor, window: int):
        self.cache, self.position, self.window = cache, position, window

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.cache.k.index_copy_(2, self.position, k)
        self.cache.v.index_copy_(2, self.position, v)
        return self.cache.k[:, :, : self.window], self.cache.v[:, :, : self.window]


class _CapturedStep:
    """One CUDA graph of a fixed-shape decode step; replay() reruns it on the current inputs."""

    def __init__(self, step, pool):
        side = torch.cuda.Stream()  # warm up off the main stream, as CUDA graph capture requires
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = step()

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.logits.clone()  # the next replay overwrites the captured output


class Engine:
    """Prefill + single-token decode over a DecoderLanguageModel, batch 1."""

    def __init__(self, model: DecoderLanguageModel, max_len: int | None = None, fixed_shape_steps: bool | None = None):
        """fixed_shape_steps: decode through the fixed-shape step (default: on a GPU, where it is
        captured as CUDA graphs; on the CPU it runs eagerly and exists to be tested)."""
        self.model = model.eval()
        config = model.config
        self.max_len = min(max_len or config.context_length, config.context_length)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        dtype = model.dtype
        self.caches = [
            LayerCache(1, config.num_kv_heads, self.max_len, config.head_dim, dtype, self.device)
            for _ in range(config.num_blocks)
        ]
        self.cached_ids: list[int] = []  # the tokens whose keys/values the cache holds
        self.last_prefill_tokens = 0  # how many prompt tokens the last prefill computed
        if fixed_shape_steps is None:
            fixed_shape_steps = self.device.type == "cuda"
        self.fixed_shape_steps = fixed_shape_steps
        # q8/q4 weights: decode steps and verifies in one native call (native_step.py)
        self.native = native_step.NativeDecoder(model, self.caches) if native_step.supported(model) else None
        # q8/q4 prefills of many tokens are faster as one float matmul over dequantized weights; a
        # GGUF-native model's products take any number of rows (and never dequantize)
        self.native_prefill_max = (self.max_len if native_step.gguf_native(model) else NATIVE_PREFILL_MAX) \
            if self.native is not None else 0
        if fixed_shape_steps:
            model.rope_tables(self.max_len)  # allocated once: a captured graph keeps their address
            self._token = torch.zeros(1, 1, dtype=torch.long, device=self.device)
            self._position = torch.zeros(1, dtype=torch.long, device=self.device)
            self._slots = torch.arange(self.max_len, device=self.device)
            self._graphs: dict[int, _CapturedStep] = {}
            self._pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None

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

    def _window(self, length: int) -> int:
        """The cache window a step at this many cached tokens attends over: a power of two."""
        return min(self.max_len, max(MIN_WINDOW, 1 << (length - 1).bit_length()))

    @torch.inference_mode()
    def _fixed_shape_step(self, window: int) -> torch.Tensor:
        """Decode self._token at self._position, attending over the first `window` cache slots."""
        position = self._position
        cos = self.model.rope_cos.index_select(0, position)
        sin = self.model.rope_sin.index_select(0, position)
        dtype = self.model.dtype
        mask = torch.zeros(1, window, dtype=dtype, device=self.device).masked_fill(
            self._slots[None, :window] > position, float("-inf"))
        caches = [_WindowView(cache, position, window) for cache in self.caches]
        return self.model.forward_at(self._token, cos, sin, mask, caches)[0, -1]

    def _step_fixed(self, token: torch.Tensor) -> torch.Tensor:
        length = len(self.cached_ids)
        window = self._window(length + 1)
        self._token.copy_(token.view(1, 1))
        self._position.fill_(length)
        if self.device.type == "cuda":
            if window not in self._graphs:
                self._graphs[window] = _CapturedStep(lambda: self._fixed_shape_step(window), self._pool)
            logits = self._graphs[window].replay()
        else:
            logits = self._fixed_shape_step(window)
        for cache in self.caches:
            cache.length = length + 1
        return logits

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
        if len(rest) <= self.native_prefill_max:
            # a follow-up turn's few new tokens: cheaper through the step kernels than dequantizing
            # every weight for one float matmul
            logits = self.native.forward(rest, common, last_only=True)[-1]
        else:
            logits = self._forward(rest)
        self.cached_ids.extend(rest)
        self.last_prefill_tokens = len(rest)
        return logits

    def step(self, token: torch.Tensor, token_id: int) -> torch.Tensor:
        """Feed one sampled token (a 1-element tensor left on the device); return next logits."""
        if len(self.cached_ids) >= self.max_len:
            raise RuntimeError("KV cache full")
        if self.native is not None:
            logits = self.native.forward([token_id], len(self.cached_ids))[-1]
        else:
            logits = self._step_fixed(token) if self.fixed_shape_steps else self._forward(token)
        self.cached_ids.append(token_id)
        return logits

    @torch.inference_mode()
    def verify(self, ids: list[int]) -> torch.Tensor:
        """Feed several ids at once (a sampled token and proposals after it); next-token logits at
        each, (len(ids), vocab). Attention runs row by row, as single steps do; with q8/q4 weights,
        whose kernels compute each row on its own, the logits equal single steps' bit for bit."""
        if len(self.cached_ids) + len(ids) > self.max_len:
            raise RuntimeError("KV cache full")
        if self.native is not None:
            logits = self.native.forward(ids, len(self.cached_ids))
        else:
            x = torch.tensor([ids], device=self.device)
            logits = self.model(x, start=len(self.cached_ids), caches=self.caches, row_by_row=True)[0]
        self.cached_ids.extend(ids)
        return logits

    def drop(self, count: int) -> None:
        """Forget the last `count` cached ids (proposals that turned out wrong)."""
        if count:
            self._rollback(len(self.cached_ids) - count)

    def reset(self) -> None:
        """Forget everything cached."""
        self._rollback(0)

    def generate(self, prompt_ids: list[int], params: GenerationParams, stop_ids: frozenset[int],
                 cancel: threading.Event | None = None, speculate: bool = False,
                 stats: SpeculationStats | None = None) -> Iterator[TokenStep]:
        """Stream tokens for a prompt with the shared sampler; `speculate`: prompt-lookup
        speculative decoding (speculation.py: the same tokens in fewer forward passes)."""
        room = self.max_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room in the cache ({self.max_len})")
        params = GenerationParams(params.sampling, min(params.max_new_tokens, room), params.grounded)
        first = self.prefill(prompt_ids)
        if speculate:
            yield from speculative_loop(prompt_ids, first, self.verify, self.drop,
                                        lambda: self.max_len - len(self.cached_ids), params,
                                        self.model.config.vocab_size, stop_ids, cancel, stats)
            return
        sampled: list[int] = []  # the id decode_loop just yielded, fed back by the next step

        def next_logits(token: torch.Tensor) -> torch.Tensor:
            return self.step(token, sampled.pop())

        for step in decode_loop(first, next_logits, params, self.model.config.vocab_size, stop_ids, cancel):
            sampled.append(step.token_id)
            yield step
