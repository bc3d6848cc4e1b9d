"""What `hearth serve` does for a request, apart from HTTP: pick the settings the request names,
answer through the conversation layer (so a served answer is prompted, grounded, cited and checked
exactly as in the chat), and apply the request's stop strings.

The backend is shared by every request: the scratch engine batches concurrent requests
(backends/scratch/batch.py), any other backend serves them one at a time (backends/serial.py).
Each request thread opens its own history Store and Collection objects (an SQLite connection is
used by one thread at a time), kept for the thread's next requests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from assistant.errors import ContextOverflow, HearthError
from assistant.server.metrics import Metrics
from assistant.server.protocol import ApiError, ChatRequest
from assistant.settings import ChatSettings
from backends.base import QueueFull
from backends.params import SamplingParams

SERVED_MODEL = "hearth"  # the model id of whatever model the server runs (its folder name works too)
DOCS_PREFIX = "docs:"  # model id "docs:NAME" answers from collection NAME
RETRY_AFTER_S = 2


def queue_full(detail: str) -> ApiError:
    return ApiError(429, f"the server is busy ({detail}); retry shortly", type="rate_limit_error",
                    code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})


@dataclass
class Finished:
    """The end of a served reply."""

    content: str  # the final answer (cited and checked when grounded; cut at a stop string)
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    extension: dict | None  # sources and checks of a grounded or checked answer


class Service:
    """The loaded model and settings every request starts from."""

    def __init__(self, backend, settings: ChatSettings, history: bool = False, max_queue: int = 64,
                 metrics: Metrics | None = None):
        self.backend = backend
        self.settings = settings
        self.history = history
        self.max_queue = max_queue
        self.metrics = metrics or Metrics(backend)
        self.model_name = Path(str(backend.model_id)).name
        self.created = int(time.time())
        self._local = threading.local()

    # -- models -------------------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        from retrieval.collection import list_collections

        return [SERVED_MODEL] + [DOCS_PREFIX + name for name in list_collections()]

    def embedder_name(self) -> str:
        from retrieval.embedder import DEFAULT_EMBEDDER

        return DEFAULT_EMBEDDER

    def serves_embedder(self, model_id: str) -> bool:
        """Whether an embeddings request names the bundled embedder: its name in any case, with or without
        the `sentence-transformers/` namespace other tools send it with."""
        name = model_id.lower().removeprefix("sentence-transformers/")
        return name == self.embedder_name().lower()

    def settings_for(self, request: ChatRequest) -> ChatSettings:
        """The server's settings with what the request asks for; 404 for a model it does not serve."""
        collection = request.collection
        served = self.model_ids()  # one look at the collections folder per request
        if request.model.startswith(DOCS_PREFIX):
            collection = collection or request.model[len(DOCS_PREFIX):]
            if request.model not in served:
                raise self.unknown_model(request.model)
        elif request.model not in (SERVED_MODEL, self.model_name):
            raise self.unknown_model(request.model)
        if collection is not None and DOCS_PREFIX + collection not in served:
            raise ApiError(404, f"no collection named {collection!r}", param="hearth.collection",
                           code="collection_not_found")
        changes: dict = {"collection": collection, "attachments": ()}
        if request.system is not None:
            changes["system_prompt"] = request.system
        if request.max_tokens is not None:
            changes["max_new_tokens"] = request.max_tokens
        if request.k is not None:
            changes["k"] = request.k
        if request.on_unsupported is not None:
            changes["on_unsupported"] = request.on_unsupported
        try:
            if request.sampling:
                changes["sampling"] = SamplingParams.from_dict(self.settings.sampling.to_dict() | request.sampling)
            return self.settings.replace(**changes)
        except (ValueError, HearthError) as exc:
            raise ApiError(400, str(exc)) from exc

    def unknown_model(self, model: str) -> ApiError:
        return ApiError(404, f"the model {model!r} does not exist; this server has: {', '.join(self.model_ids())}",
                        param="model", code="model_not_found")

    # -- per-thread storage ---------------------------------------------------------------------------
    def _store(self):
        if not self.history:
            return None
        if getattr(self._local, "store", None) is None:
            from assistant.store import Store

            self._local.store = Store()
        return self._local.store

    def _collection(self, name: str | None):
        if name is None:
            return None
        opened = getattr(self._local, "collections", None)
        if opened is None:
            opened = self._local.collections = {}
        if name not in opened:
            from assistant.conversation import open_collection

            opened[name] = open_collection(name)
        return opened[name]

    # -- replies --------------------------------------------------------------------------------------
    def reply(self, request: ChatRequest, cancel: threading.Event) -> Iterator[str | Finished]:
        """The reply's text as it streams, then Finished. Errors a client caused raise ApiError
        before the first piece (bad settings, unknown model, too long a prompt, a full queue)."""
        from assistant.conversation import ChatSession, DoneEvent, TokenEvent

        settings = self.settings_for(request)
        if getattr(self.backend, "queued", 0) >= self.max_queue:
            raise queue_full(f"{self.backend.queued} requests waiting")
        try:
            session = ChatSession(self.backend, settings, store=self._store(), collection=self._collection(
                settings.collection))
            session.take_history(request.history)
            events = session.send(request.question, cancel)
            first = next(events)  # the prompt is planned (and may overflow) before anything streams
        except ContextOverflow as exc:
            raise ApiError(400, str(exc), param="messages", code="context_length_exceeded") from exc
        except QueueFull as exc:
            raise queue_full(str(exc)) from exc
        except HearthError as exc:
            raise ApiError(400, str(exc)) from exc
        if session.conversation is not None:
            session.store.update_conversation(session.conversation.id,
                                              settings=session.conversation.settings | {"served": True})
        cut = StopCut(request.stop)
        stopped = False
        started = time.perf_counter()
        done = None
        try:
            for event in _chain(first, events):
                if isinstance(event, TokenEvent):
                    if stopped:
                        continue
                    if not cut.text and event.text:
                        self.metrics.first_token(time.perf_counter() - started)
                    piece, stopped = cut.push(event.text)
                    if stopped:
                        cancel.set()  # the model stops at its next step; the rest is not sent
                    if piece:
                        yield piece
                elif isinstance(event, DoneEvent):
                    done = event
        finally:
            events.close()
        if done is None:
            return
        if done.finish_reason == "error":
            if done.error and done.error.startswith("QueueFull"):
                raise queue_full(done.error)
            raise ApiError(500, f"generation failed: {done.error}", type="server_error", code="generation_failed")
        reply = done.message
        tail = cut.flush() if not stopped else ""
        if tail:
            yield tail
        content = cut.text if stopped else reply.content
        finish = "stop" if stopped or done.finish_reason in ("stop", "cancelled") else done.finish_reason
        extension = None
        if settings.grounded or reply.checks:
            extension = {"sources": reply.sources, "checks": reply.checks, "content": content}
        timings = reply.timings
        self.metrics.tokens(timings.prompt_tokens, timings.completion_tokens)
        yield Finished(content, finish, timings.prompt_tokens, timings.completion_tokens, extension)


def _chain(first, rest):
    yield first
    yield from rest


class StopCut:
    """Applies stop strings to streamed text: what may be sent now, and whether a stop string came.
    Up to len(longest stop) - 1 characters are held back, since they may begin a stop string."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""  # everything accepted so far (cut at the stop string once one came)
        self.sent = 0

    def push(self, piece: str) -> tuple[str, bool]:
        self.text += piece
        hits = [i for i in (self.text.find(s, max(0, self.sent - self.hold)) for s in self.stops) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            out = self.text[self.sent :]
            self.sent = len(self.text)
            return out, True
        upto = max(self.sent, len(self.text) - self.hold)
        out = self.text[self.sent : upto]
        self.sent = upto
        return out, False

    def flush(self) -> str:
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out
