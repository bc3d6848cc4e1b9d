"""Any backend served to concurrent callers one request at a time, through a bounded queue (the
hf backend's way to serve; the scratch engine batches instead: backends/scratch/batch.py)."""

from __future__ import annotations

import threading
from typing import Iterator

from backends.base import GenerationParams, QueueFull, TokenStep


class SerialBackend:
    """The Backend protocol over `backend`, letting one stream run at a time; others wait in turn."""

    def __init__(self, backend, max_queue: int = 64):
        self.inner = backend
        self.name, self.model_id, self.precision, self.adapter = (backend.name, backend.model_id, backend.precision,
                                                                  backend.adapter)
        self.tokenizer, self.context_length = backend.tokenizer, backend.context_length
        self.grounded_adapter = getattr(backend, "grounded_adapter", None)
        self.max_queue = max_queue
        self._turn = threading.Lock()
        self._count = threading.Lock()
        self._waiting = 0
        self._running = 0

    @property
    def queued(self) -> int:
        return self._waiting

    @property
    def active(self) -> int:
        return self._running

    def stream(self, prompt_ids: list[int], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[TokenStep]:
        with self._count:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are waiting")
            self._waiting += 1
        return self._run(prompt_ids, params, cancel)

    def _run(self, prompt_ids, params, cancel) -> Iterator[TokenStep]:
        started = False
        try:
            with self._turn:
                with self._count:
                    self._waiting -= 1
                    self._running += 1
                started = True
                try:
                    if cancel is None or not cancel.is_set():
                        yield from self.inner.stream(prompt_ids, params, cancel)
                finally:
                    with self._count:
                        self._running -= 1
        finally:
            if not started:  # closed while it waited (or never iterated)
                with self._count:
                    self._waiting -= 1

    def close(self) -> None:
        pass
