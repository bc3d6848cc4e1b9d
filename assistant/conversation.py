"""The conversation manager: history, system prompt, context budget, streaming a reply."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Union

from assistant import chatml
from assistant.chatml import ChatMessage
from assistant.config import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SYSTEM_PROMPT, GROUNDING_GENERAL, GROUNDING_QUESTION
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
POLICIES = ("annotate", "regenerate", "abstain")
SAVE_EVERY_S = 1.0  # a streaming reply is stored at least this often (what a crash can lose)


def check_kind(grounded: bool) -> str:
    """The calibration kind (config.GROUNDING_KINDS) a reply is checked as: a reply grounded in
    documents answers a question from passages; any other reply is checked against the chat."""
    return GROUNDING_QUESTION if grounded else GROUNDING_GENERAL


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
    on_unsupported: str = "annotate"  # grounded answers below the support threshold: see POLICIES
    check_answers: bool = False  # also check answers without documents, against the conversation
    self_check: int = 0  # re-sampled answers for self-consistency (0 = off)
    save_every_s: float = SAVE_EVERY_S  # how often a streaming reply is written to the store
    _turn: "tuple[str, list[ChatMessage]] | None" = field(default=None, repr=False)

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
        """Store a new message, or overwrite the stored one (a reply saved while it streams)."""
        if self.store is not None and self.conversation is not None:
            if message.id is None:
                self.store.add_message(self.conversation.id, message)
            else:
                self.store.replace_message(message)
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
        if self.on_unsupported not in POLICIES:
            raise ValueError(f"on_unsupported must be one of {', '.join(POLICIES)}")
        self._turn = (text, history)
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
            plan = self._grounded_plan(text, history, sources)
            if plan is not None:
                return plan, sources
            sources = sources[:-1]
        raise ContextOverflow("the question and even one source do not fit the model's context.")

    def _grounded_plan(self, text: str, history: list[ChatMessage], sources: "list[Source]",
                       strict: bool = False) -> PromptPlan | None:
        """The grounded prompt, or None when it leaves too little room for a reply."""
        from assistant import rag

        system, current = rag.grounded_messages(text, sources, strict)
        try:
            plan = fit_context(system, history, current, self.backend.tokenizer,
                               self.backend.context_length, self.max_new_tokens)
        except ContextOverflow:
            return None
        return plan if plan.max_new_tokens >= min(self.max_new_tokens, 256) else None

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

    def _check(self, answer: str, sources: "list[Source] | None", samples: list[str]):
        """(answer with citations added, its Checks) against the sources, or against the conversation."""
        from assistant import grounding, rag

        question = self._turn[0] if self._turn else ""
        kind = check_kind(sources is not None)
        if sources is not None:
            checks = grounding.check(answer, [(s.chunk_id, s.text) for s in sources], self.collection.embedder,
                                     question=question, samples=samples, kind=kind)
            return rag.add_citations(answer, checks, sources), checks
        from retrieval.embedder import shared_embedder

        # without documents, what the user said is all an answer can be grounded in
        said = [(i, m.content) for i, m in enumerate(self.messages) if m.role == "user"]
        return answer, grounding.check(answer, said, shared_embedder(), question=question, samples=samples, kind=kind)

    def _complete(self, plan: PromptPlan, params: GenerationParams, cancel: threading.Event | None) -> str:
        """A whole reply to the plan, not streamed (for retries and self-consistency samples)."""
        tokenizer = self.backend.tokenizer
        ids = []
        for step in self.backend.stream(plan.ids, params, cancel):
            if step.token_id in tokenizer.stop_ids:
                break
            ids.append(step.token_id)
        return tokenizer.decode(ids)

    def _samples(self, cancel: threading.Event | None) -> list[str]:
        """self_check re-sampled answers to the last prompt (balanced preset), for self-consistency."""
        from backends.sampling import PRESETS

        if not self.self_check or self.last_plan is None:
            return []
        params = GenerationParams(PRESETS["balanced"], self.last_plan.max_new_tokens)
        return [self._complete(self.last_plan, params, cancel) for _ in range(self.self_check)]

    def _apply_policy(self, content: str, checks, sources: "list[Source] | None", samples: list[str],
                      params: GenerationParams, cancel: threading.Event | None):
        """(content, checks) after the on_unsupported policy for an answer below the threshold."""
        from assistant.rag import ABSTAIN

        if checks.supported or sources is None or self.on_unsupported == "annotate":
            return content, checks.to_dict()
        if self.on_unsupported == "abstain":
            return ABSTAIN, {"score": checks.score, "sentences": [], "policy": "abstain", "replaced": content}
        text, history = self._turn
        plan = self._grounded_plan(text, history, sources, strict=True)
        if plan is None or (cancel is not None and cancel.is_set()):
            return content, checks.to_dict()
        retry = self._complete(plan, GenerationParams(params.sampling, plan.max_new_tokens), cancel)
        if not retry.strip():
            return content, checks.to_dict()
        retry, retry_checks = self._check(retry, sources, samples)
        keep = (retry, retry_checks) if (retry_checks.score or 0) > (checks.score or 0) else (content, checks)
        return keep[0], keep[1].to_dict() | {"policy": "regenerate", "retried": True}

    def _generate(self, plan: PromptPlan, cancel: threading.Event | None,
                  sources: "list[Source] | None" = None) -> Iterator[Event]:
        self.last_plan = plan
        tokenizer = self.backend.tokenizer
        params = GenerationParams(self.sampling, plan.max_new_tokens)
        decoder = StreamDecoder(tokenizer)
        # Stored as "interrupted" while it streams and rewritten every SAVE_EVERY_S, so a crash or a
        # killed process loses at most that much of the reply; the end of the reply stores its real status.
        reply = Message(
            role="assistant", content="", status="interrupted", backend=self.backend.name,
            model=self.backend.model_id, sources=[s.to_dict() for s in sources or []],
            settings={"sampling": self.sampling.to_dict(), "max_new_tokens": params.max_new_tokens},
        )
        content_ids: list[int] = []
        steps = 0
        finish, error = "length", None
        start = saved_at = time.perf_counter()
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
                if last_at - saved_at >= self.save_every_s:
                    reply.content = tokenizer.decode(content_ids)
                    self._save(reply)
                    saved_at = last_at
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
            reply.timings = Timings(
                ttft_s=(first_at - start) if first_at else None,
                decode_tok_s=((steps - 1) / (last_at - first_at)) if steps > 1 and last_at > first_at else None,
                prompt_tokens=len(plan.ids),
                completion_tokens=steps,
            )
            reply.content = tokenizer.decode(content_ids)
            if (sources is not None or self.check_answers) and finish in ("stop", "length") and reply.content.strip():
                self._save(reply)  # still "interrupted": the check (and a retry) can take a while
                try:
                    samples = self._samples(cancel)  # once per reply: the retry is compared with them too
                    content, found = self._check(reply.content, sources, samples)
                    reply.content, reply.checks = self._apply_policy(content, found, sources, samples, params, cancel)
                except Exception as exc:  # the reply is kept even when its check fails
                    log.exception("grounding check failed")
                    error = error or f"grounding check failed: {type(exc).__name__}: {exc}"
            reply.status = finish
            self.messages.append(self._save(reply))
        yield DoneEvent(reply, finish, reply.timings, error)
