"""The conversation manager: history, system prompt, context budget, streaming a reply."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Union

from assistant import chatml
from assistant.chatml import ChatMessage
from assistant.config import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SYSTEM_PROMPT
from assistant.errors import ContextOverflow
from assistant.records import Conversation, Message, Timings
from assistant.store import Store
from backends.base import Backend, GenerationParams
from backends.sampling import SamplingParams
from backends.tokenizer import ChatTokenizer, StreamDecoder

if TYPE_CHECKING:
    from assistant.rag import Source
    from retrieval.collection import Collection

log = logging.getLogger(__name__)

TITLE_CHARS = 60


@dataclass(frozen=True)
class TokenEvent:
    """A piece of reply text as it streams (may be empty while a character is incomplete)."""

    text: str
    token_id: int
    logprob: float


@dataclass(frozen=True)
class DoneEvent:
    """The reply is over: stop, length, cancelled or error."""

    message: Message
    finish_reason: str
    timings: Timings
    error: str | None = None


Event = Union[TokenEvent, DoneEvent]


@dataclass
class PromptPlan:
    """What will be sent to the backend for one reply."""

    ids: list[int]
    dropped_messages: int  # oldest history messages left out to fit the context
    max_new_tokens: int


def _turns(history: list[ChatMessage]) -> list[list[ChatMessage]]:
    """Group messages into turns, each starting at a user message."""
    turns: list[list[ChatMessage]] = []
    for m in history:
        if m.role == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


def fit_context(
    system: ChatMessage | None,
    history: list[ChatMessage],
    current: list[ChatMessage],
    tokenizer: ChatTokenizer,
    context_length: int,
    max_new_tokens: int,
) -> PromptPlan:
    """Render the prompt, dropping the oldest whole turns so prompt + reply fits the context.

    The system prompt and the `current` messages (the user turn being answered) are never
    dropped. If they alone leave no room for a reply, ContextOverflow is raised; if they leave
    less than `max_new_tokens`, the reply budget shrinks to what is left.
    """
    def length(m: ChatMessage) -> int:
        return len(chatml.encode_message(m, tokenizer).ids)

    fixed = [system] if system else []
    fixed_len = sum(length(m) for m in fixed + current) + len(chatml.generation_prompt(tokenizer))
    room = context_length - fixed_len
    if room < 1:
        raise ContextOverflow(
            f"the message is too long for the model: {fixed_len} prompt tokens, "
            f"context limit {context_length}. Shorten it or use a model with a longer context."
        )
    turns = _turns(history)
    turn_lens = [sum(length(m) for m in turn) for turn in turns]
    budget = min(max_new_tokens, room)
    start = 0
    while start < len(turns) and sum(turn_lens[start:]) + budget > room:
        start += 1
    kept = [m for turn in turns[start:] for m in turn]
    dropped = sum(len(t) for t in turns[:start])
    ids = chatml.encode(fixed + kept + current, tokenizer, add_generation_prompt=True).ids
    return PromptPlan(ids=ids, dropped_messages=dropped, max_new_tokens=budget)


@dataclass
class ChatSession:
    """One conversation bound to a backend, stored as it goes (unless store is None)."""

    backend: Backend
    store: Store | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    messages: list[Message] = field(default_factory=list)
    conversation: Conversation | None = None
    last_plan: PromptPlan | None = None
    collection: "Collection | None" = None  # answer from these documents when set
    k: int = 3  # sources per grounded answer

    @classmethod
    def resume(cls, backend: Backend, store: Store, conversation_id: int, **kwargs) -> "ChatSession":
        """Continue a stored conversation (ConversationNotFound if the id is unknown)."""
        conv = store.get_conversation(conversation_id)
        session = cls(backend=backend, store=store, system_prompt=conv.system_prompt, **kwargs)
        session.conversation = conv
        session.messages = [m for m in store.messages(conversation_id) if m.role != "system"]
        return session

    @property
    def conversation_id(self) -> int | None:
        return self.conversation.id if self.conversation else None

    def _ensure_conversation(self, first_user_text: str) -> None:
        if self.store is None or self.conversation is not None:
            return
        title = " ".join(first_user_text.split())[:TITLE_CHARS] or "New conversation"
        self.conversation = self.store.create_conversation(
            Conversation(
                title=title,
                system_prompt=self.system_prompt,
                backend=self.backend.name,
                model=self.backend.model_id,
                settings={"sampling": self.sampling.to_dict(), "max_new_tokens": self.max_new_tokens},
            )
        )

    def _save(self, message: Message) -> Message:
        if self.store is not None and self.conversation is not None:
            self.store.add_message(self.conversation.id, message)
        return message

    def history_for_model(self) -> list[ChatMessage]:
        """Stored messages as the model sees them (failed replies left out)."""
        return [
            ChatMessage(m.role, m.content)
            for m in self.messages
            if not (m.role == "assistant" and m.status == "error")
        ]

    def plan(self, current: list[ChatMessage], history: list[ChatMessage]) -> PromptPlan:
        """Fit system prompt, history and the current turn into the backend's context."""
        system = ChatMessage("system", self.system_prompt) if self.system_prompt else None
        return fit_context(
            system, history, current, self.backend.tokenizer,
            self.backend.context_length, self.max_new_tokens,
        )

    def send(self, user_text: str, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Store the user turn, then stream the reply as events; the reply is stored at the end."""
        history = self.history_for_model()
        plan, sources = self._plan_turn(user_text, history)  # raises before anything is stored
        self._ensure_conversation(user_text)
        self.messages.append(self._save(Message(role="user", content=user_text)))
        yield from self._reply(plan, sources, cancel)

    def regenerate(self, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Replace the last reply with a new one for the same user turn."""
        if self.messages and self.messages[-1].role == "assistant":
            old = self.messages.pop()
            if self.store is not None and old.id is not None:
                self.store.delete_message(old.id)
        if not self.messages or self.messages[-1].role != "user":
            raise ValueError("there is no user message to answer")
        history = self.history_for_model()
        plan, sources = self._plan_turn(history[-1].content, history[:-1])
        yield from self._reply(plan, sources, cancel)

    def _plan_turn(self, text: str, history: list[ChatMessage]) -> "tuple[PromptPlan | None, list[Source] | None]":
        """The prompt for a user turn; with documents on, also its sources (plan None = abstain)."""
        if self.collection is None:
            return self.plan([ChatMessage("user", text)], history), None
        from assistant import rag
        from retrieval.search import dense_scores, search

        query_vec = self.collection.embedder.encode([text])[0]
        hits = search(self.collection, text, k=self.k, mode="hybrid", query_vec=query_vec)
        best = dense_scores(self.collection, query_vec, 1)
        sources = rag.sources_from_hits(hits)
        if not best or best[0][1] < rag.MIN_RELEVANCE:
            return None, sources
        while sources:  # drop the lowest-ranked sources until prompt + reply fit
            system, current = rag.grounded_messages(text, sources)
            try:
                plan = fit_context(system, history, current, self.backend.tokenizer,
                                   self.backend.context_length, self.max_new_tokens)
                if plan.max_new_tokens >= min(self.max_new_tokens, 256):
                    return plan, sources
            except ContextOverflow:
                pass
            sources = sources[:-1]
        raise ContextOverflow("the question and even one source do not fit the model's context.")

    def _reply(self, plan: PromptPlan | None, sources: "list[Source] | None",
               cancel: threading.Event | None) -> Iterator[Event]:
        if plan is not None:
            yield from self._generate(plan, cancel, sources)
            return
        from assistant.rag import ABSTAIN  # the documents hold nothing relevant: no model call

        reply = Message(role="assistant", content=ABSTAIN, status="stop", backend=self.backend.name,
                        model=self.backend.model_id, sources=[s.to_dict() for s in sources or []])
        self.messages.append(self._save(reply))
        yield TokenEvent(ABSTAIN, -1, 0.0)
        yield DoneEvent(reply, "stop", reply.timings)

    def _ground(self, answer: str, sources: "list[Source]") -> tuple[str, dict]:
        from assistant import grounding, rag

        checks = grounding.check(answer, [(s.chunk_id, s.text) for s in sources], self.collection.embedder)
        return rag.add_citations(answer, checks, sources), checks.to_dict()

    def _generate(self, plan: PromptPlan, cancel: threading.Event | None,
                  sources: "list[Source] | None" = None) -> Iterator[Event]:
        self.last_plan = plan
        tokenizer = self.backend.tokenizer
        params = GenerationParams(self.sampling, plan.max_new_tokens)
        decoder = StreamDecoder(tokenizer)
        content_ids: list[int] = []
        steps = 0
        finish, error = "length", None
        start = time.perf_counter()
        first_at = last_at = None
        stream = self.backend.stream(plan.ids, params, cancel)
        try:
            for step in stream:
                last_at = time.perf_counter()
                first_at = first_at or last_at
                steps += 1
                if step.token_id in tokenizer.stop_ids:
                    finish = "stop"
                    break
                content_ids.append(step.token_id)
                yield TokenEvent(decoder.push(step.token_id), step.token_id, step.logprob)
            if finish != "stop" and cancel is not None and cancel.is_set():
                finish = "cancelled"
        except GeneratorExit:  # the consumer stopped listening (Ctrl+C, window closed)
            finish = "cancelled"
            raise
        except Exception as exc:  # a backend failure ends this reply, not the session
            log.exception("generation failed")
            finish, error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            stream.close()
            timings = Timings(
                ttft_s=(first_at - start) if first_at else None,
                decode_tok_s=((steps - 1) / (last_at - first_at)) if steps > 1 and last_at > first_at else None,
                prompt_tokens=len(plan.ids),
                completion_tokens=steps,
            )
            content, checks = tokenizer.decode(content_ids), None
            if sources is not None and finish in ("stop", "length") and content.strip():
                content, checks = self._ground(content, sources)
            reply = Message(
                role="assistant",
                content=content,
                sources=[s.to_dict() for s in sources or []],
                checks=checks,
                status=finish,
                backend=self.backend.name,
                model=self.backend.model_id,
                settings={"sampling": self.sampling.to_dict(), "max_new_tokens": params.max_new_tokens},
                timings=timings,
            )
            self.messages.append(self._save(reply))
        yield DoneEvent(reply, finish, timings, error)
