"""Continuous batching for the scratch engine: concurrent requests decode together.

One thread owns the model. Between decode steps it admits waiting requests into free slots of a
batched KV cache and prefills them together (a prompt prefix some slot already holds, such as the
shared system prompt, is copied instead of computed), then runs one forward pass for every active
sequence: each row has its own token, its own position (its rotation angles and its causal mask)
and its own slot of the cache. A sequence that finishes, or whose consumer cancels or goes away,
frees its slot before the next step, and a waiting one takes it.

Rows run over the cache slots 0..highest active, and new sequences take the lowest free slot, so
the step reads the cache through plain slices (copying every row's cache into a packed batch
would cost more than the step). A free slot below the highest active one is computed as a dummy
row at position 0 and its output discarded.

`BatchedBackend` puts this behind the Backend protocol, so the conversation layer (prompts,
grounding, the check, history) serves concurrent requests unchanged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from backends.base import GenerationParams, QueueFull, TokenStep
from backends.sampling import Sampler
from backends.scratch.engine import MIN_WINDOW
from backends.scratch.model import DecoderLanguageModel

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 8
# An idle engine gathers requests for this long before prefilling them in one pass, so a burst of
# clients is not served as one prefill alone and then the rest (which doubled their time to first token).
GATHER_S = 0.03
MIN_REUSE = 8  # shorter shared prefixes are recomputed (a copy per layer costs more than it saves)


class _PrefillView:
    """Some slots of the batched cache for a prefill: row i's new keys and values go to slot
    slots[i] at positions[i] (its reused prefix length onwards); attention reads those slots' first
    `window` positions. Rows are padded on the right: a pad's key lands past its prompt, where the
    sequence's first decode step overwrites it and, until then, the mask hides it."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor, window: int):
        self.k, self.v, self.slots, self.positions, self.window = k, v, slots, positions, window

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.slots[:, None].expand_as(self.positions)
        self.k[rows, :, self.positions] = k.transpose(1, 2)
        self.v[rows, :, self.positions] = v.transpose(1, 2)
        return self.k[self.slots, :, : self.window], self.v[self.slots, :, : self.window]


class _StepView:
    """Rows 0..n-1 of the batched cache for one decode step: row i's new key goes to its own position."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, window: int):
        self.k, self.v, self.rows, self.positions, self.window = k, v, rows, positions, window

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.rows.shape[0]
        self.k[self.rows, :, self.positions] = k[:, :, 0]
        self.v[self.rows, :, self.positions] = v[:, :, 0]
        return self.k[:n, :, : self.window], self.v[:n, :, : self.window]


@dataclass
class _Sequence:
    prompt_ids: list[int]
    params: GenerationParams
    stop_ids: frozenset[int]
    cancel: threading.Event | None  # the caller's
    out: "queue.Queue[TokenStep | BaseException | None]" = field(default_factory=queue.Queue)
    slot: int = -1
    length: int = 0  # tokens in its cache
    produced: int = 0
    sampler: Sampler | None = None
    next_token: int = 0  # sampled, not yet fed to the model
    held: list[int] = field(default_factory=list)  # the tokens whose keys/values its slot holds
    closed: threading.Event = field(default_factory=threading.Event)  # its consumer stopped listening

    @property
    def cancelled(self) -> bool:
        return self.closed.is_set() or (self.cancel is not None and self.cancel.is_set())


class BatchEngine:
    """Decodes up to `slots` sequences at once over one DecoderLanguageModel."""

    def __init__(self, model: DecoderLanguageModel, max_len: int, slots: int = DEFAULT_SLOTS, max_queue: int = 64):
        self.model = model.eval()
        config = model.config
        self.max_len = min(max_len, config.context_length)
        self.slots = slots
        self.max_queue = max_queue
        param = next(model.parameters())
        self.device, dtype = param.device, model.dtype
        shape = (slots, config.num_kv_heads, self.max_len, config.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(config.num_blocks)]
        self.v = [torch.zeros_like(k) for k in self.k]
        model.rope_tables(self.max_len)
        self.columns = _use_faster_orientation(model, slots)
        self._waiting: "queue.Queue[_Sequence]" = queue.Queue()
        self._active: dict[int, _Sequence] = {}  # slot -> sequence
        self._held: dict[int, list[int]] = {}  # slot -> tokens its cache holds (also after its sequence left)
        self._wake = threading.Event()
        self._stopping = False
        self.steps = 0  # decode steps run
        self.rows_decoded = 0  # sequence-steps in them (occupancy = rows_decoded / steps)
        self.prompt_tokens_reused = 0  # prompt tokens whose keys/values were copied, not computed
        self._thread = threading.Thread(target=self._run, name="batch-engine", daemon=True)
        self._thread.start()

    # -- the callers' side --------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self._waiting.qsize()

    @property
    def active(self) -> int:
        return len(self._active)

    def generate(self, prompt_ids: list[int], params: GenerationParams, stop_ids: frozenset[int],
                 cancel: threading.Event | None = None) -> Iterator[TokenStep]:
        """Stream a sequence's tokens as the batch produces them; closing the iterator cancels it."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        room = self.max_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room in the cache ({self.max_len})")
        if self._waiting.qsize() >= self.max_queue:
            raise QueueFull(f"{self._waiting.qsize()} requests are waiting")
        seq = _Sequence(list(prompt_ids), GenerationParams(params.sampling, min(params.max_new_tokens, room)),
                        stop_ids, cancel)
        self._waiting.put(seq)
        self._wake.set()
        return self._drain(seq)

    def _drain(self, seq: _Sequence) -> Iterator[TokenStep]:
        try:
            while True:
                item = seq.out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            seq.closed.set()  # a consumer that stops listening frees the slot at the next step
            self._wake.set()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)

    # -- the model thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            if not self._active and self._waiting.empty():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                self._retire()
                if not self._active:  # an idle engine waits a moment: requests sent together start together
                    time.sleep(GATHER_S)
                self._admit()
                if self._active:
                    self._step()
            except Exception as exc:  # noqa: BLE001  a failed step fails its sequences, not the engine
                log.exception("batched decode step failed")
                for slot, seq in list(self._active.items()):
                    seq.out.put(exc)
                    del self._active[slot]
        for seq in list(self._active.values()):
            seq.out.put(None)

    def _retire(self) -> None:
        for slot, seq in list(self._active.items()):
            if seq.cancelled:
                seq.out.put(None)
                del self._active[slot]

    def _admit(self) -> None:
        """Take waiting sequences into free slots (lowest first) and prefill them in one pass."""
        admitted: list[_Sequence] = []
        free = sorted(set(range(self.slots)) - set(self._active))
        while free and not self._waiting.empty():
            seq = self._waiting.get()
            if seq.cancelled:
                seq.out.put(None)
                continue
            seq.slot = free.pop(0)
            admitted.append(seq)
        if not admitted:
            return
        try:
            self._prefill(admitted)
        except Exception as exc:  # noqa: BLE001  (a failed prefill fails only the sequences in it)
            for seq in admitted:
                seq.out.put(exc)
            return
        for seq in admitted:
            if self._emit(seq):
                self._active[seq.slot] = seq

    def _reuse(self, seq: _Sequence) -> int:
        """Copy the longest prefix of the prompt that any slot's cache holds (the system prompt and
        earlier turns that requests share) into the sequence's slot; returns its length."""
        limit = len(seq.prompt_ids) - 1  # at least one token is computed, for its logits
        best, donor = 0, None
        for slot, held in self._held.items():
            n = 0
            for a, b in zip(held[:limit], seq.prompt_ids):
                if a != b:
                    break
                n += 1
            if n > best:
                best, donor = n, slot
        if best < MIN_REUSE:
            return 0
        if donor != seq.slot:
            for k, v in zip(self.k, self.v):
                k[seq.slot, :, :best] = k[donor, :, :best]
                v[seq.slot, :, :best] = v[donor, :, :best]
        return best

    @torch.inference_mode()
    def _prefill(self, seqs: list[_Sequence]) -> None:
        starts = [self._reuse(seq) for seq in seqs]  # all copies before any slot is written
        for seq in seqs:
            self._held[seq.slot] = seq.held = list(seq.prompt_ids)
        rest = [seq.prompt_ids[start:] for seq, start in zip(seqs, starts)]
        width = max(len(r) for r in rest)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        for row, tokens in enumerate(rest):
            ids[row, : len(tokens)] = torch.tensor(tokens)
        start = torch.tensor(starts)
        # (rows, width); a pad past the cache's end is written to its last slot, which no prompt uses
        positions = (start[:, None] + torch.arange(width)[None, :]).clamp(max=self.max_len - 1)
        window = int(positions.max()) + 1
        cos = self.model.rope_cos[positions]  # (rows, width, d/2): each row's own positions
        sin = self.model.rope_sin[positions]
        dtype = self.model.dtype
        mask = torch.zeros(len(seqs), 1, width, window, dtype=dtype).masked_fill(
            torch.arange(window)[None, None, None, :] > positions[:, None, :, None], float("-inf"))
        slots = torch.tensor([s.slot for s in seqs])
        caches = [_PrefillView(k, v, slots.to(self.device), positions.to(self.device), window)
                  for k, v in zip(self.k, self.v)]
        last = torch.tensor([len(r) - 1 for r in rest], device=self.device)
        logits = self.model.forward_at(ids.to(self.device), cos.to(self.device), sin.to(self.device),
                                       mask.to(self.device), caches, logits_at=last)
        self.prompt_tokens_reused += sum(starts)
        for row, seq in enumerate(seqs):
            seq.length = len(seq.prompt_ids)
            seq.sampler = Sampler(seq.params.sampling, self.model.config.vocab_size, device=self.device)
            self._sample(seq, logits[row])

    def _sample(self, seq: _Sequence, logits: torch.Tensor) -> None:
        token_id, logprob = seq.sampler.sample(logits).tolist()
        seq.next_token = int(token_id)
        seq.out.put(TokenStep(seq.next_token, logprob))
        seq.produced += 1

    def _emit(self, seq: _Sequence) -> bool:
        """After a token: whether the sequence goes on (else it is finished and told so)."""
        if seq.next_token in seq.stop_ids or seq.produced >= seq.params.max_new_tokens or seq.cancelled:
            seq.out.put(None)
            return False
        return True

    @torch.inference_mode()
    def _step(self) -> None:
        n = max(self._active) + 1
        tokens = torch.zeros(n, 1, dtype=torch.long)
        positions = torch.zeros(n, dtype=torch.long)
        for slot, seq in self._active.items():
            tokens[slot, 0] = seq.next_token
            positions[slot] = seq.length
        tokens, positions = tokens.to(self.device), positions.to(self.device)
        window = min(self.max_len, max(MIN_WINDOW, 1 << int(positions.max()).bit_length()))
        cos = self.model.rope_cos.index_select(0, positions)[:, None]  # (n, 1, d/2): one position per row
        sin = self.model.rope_sin.index_select(0, positions)[:, None]
        slots = torch.arange(window, device=self.device)
        dtype = self.model.dtype
        mask = torch.zeros(n, 1, 1, window, dtype=dtype, device=self.device).masked_fill(
            slots[None, None, None, :] > positions[:, None, None, None], float("-inf"))
        rows = torch.arange(n, device=self.device)
        caches = [_StepView(k, v, rows, positions, window) for k, v in zip(self.k, self.v)]
        logits = self.model.forward_at(tokens, cos, sin, mask, caches)[:, -1]
        self.steps += 1
        self.rows_decoded += len(self._active)
        for slot, seq in list(self._active.items()):
            seq.length += 1
            seq.held.append(seq.next_token)
            self._sample(seq, logits[slot])
            if not self._emit(seq):
                del self._active[slot]


def _use_faster_orientation(model: DecoderLanguageModel, rows: int) -> bool:
    """Time the output projection (the largest matmul) on `rows` rows both ways; if W x^T is
    clearly faster on this machine, let every Linear of the model use it for up to `rows` rows.
    Returns whether it does."""
    from backends.scratch.model import Linear

    layer = model.output
    if rows < 2 or not isinstance(layer, Linear) or layer.weight.device.type != "cpu":
        return False
    x = torch.randn(rows, layer.in_features, dtype=layer.weight.dtype)

    def best_of(columns: int) -> float:
        layer.columns_up_to = columns
        times = []
        with torch.inference_mode():
            for _ in range(4):
                start = time.perf_counter()
                layer(x)
                times.append(time.perf_counter() - start)
        return min(times[1:])

    faster = best_of(rows) < 0.8 * best_of(0)
    for module in model.modules():
        if isinstance(module, Linear):
            module.columns_up_to = rows if faster else 0
    log.info("batched decode multiplies few rows as %s", "W x^T" if faster else "x W^T")
    return faster


class BatchedBackend:
    """A scratch backend whose requests share one BatchEngine (the Backend protocol).

    Grounded answers (GenerationParams.grounded) go through the backend's grounded-answer adapter as
    they do unbatched: a second BatchEngine over the merged weights (ScratchBackend.grounded_model),
    built on the first grounded request, batches them among themselves."""

    def __init__(self, backend, slots: int = DEFAULT_SLOTS, max_queue: int = 64):
        self.inner = backend
        self.name, self.model_id, self.precision, self.adapter = backend.name, backend.model_id, backend.precision, None
        self.tokenizer, self.context_length = backend.tokenizer, backend.context_length
        self.grounded_adapter = getattr(backend, "grounded_adapter", None)
        self.slots, self.max_queue = slots, max_queue
        self.engine = BatchEngine(backend.engine.model, backend.context_length, slots=slots, max_queue=max_queue)
        self._grounded: BatchEngine | None = None
        self._grounded_lock = threading.Lock()

    def _engines(self) -> list[BatchEngine]:
        return [self.engine] + ([self._grounded] if self._grounded is not None else [])

    def grounded_engine(self) -> BatchEngine:
        """The batch engine of the weights with the grounded-answer adapter merged (built once)."""
        with self._grounded_lock:
            if self._grounded is None:
                self._grounded = BatchEngine(self.inner.grounded_model(), self.context_length,
                                             slots=self.slots, max_queue=self.max_queue)
            return self._grounded

    @property
    def queued(self) -> int:
        return sum(engine.queued for engine in self._engines())

    @property
    def active(self) -> int:
        return sum(engine.active for engine in self._engines())

    @property
    def occupancy(self) -> float:
        """Mean sequences per decode step since start, over both engines."""
        steps = sum(engine.steps for engine in self._engines())
        return sum(engine.rows_decoded for engine in self._engines()) / steps if steps else 0.0

    def stream(self, prompt_ids: list[int], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[TokenStep]:
        engine = self.grounded_engine() if params.grounded and self.grounded_adapter else self.engine
        return engine.generate(prompt_ids, params, self.tokenizer.stop_ids, cancel)

    def close(self) -> None:
        for engine in self._engines():
            engine.close()
