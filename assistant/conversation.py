"""The conversation manager: history, system prompt, context budget, streaming, checking and
editing replies. The chat UI and the CLI call these operations and only present their results."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Union

from assistant import chatml
from assistant.chatml import ChatMessage
from assistant.config import GROUNDING_GENERAL, GROUNDING_QUESTION
from assistant.errors import ContextOverflow, HearthError
from assistant.records import Conversation, Message, Timings
from assistant.settings import ChatSettings
from assistant.store import Store
from backends.base import Backend, GenerationParams
from backends.tokenizer import ChatTokenizer, StreamDecoder

if TYPE_CHECKING:
    from assistant.rag import Source
    from retrieval.collection import Collection

log = logging.getLogger(__name__)

TITLE_CHARS = 60
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
    """What will be sent to the backend for one reply: `ids` to a local model, `messages` (the same
    prompt before rendering) to one that takes messages (a remote endpoint; `ids` are then counted
    with its estimate, not sent)."""

    ids: list[int]
    dropped_messages: int  # oldest history messages left out to fit the context
    max_new_tokens: int
    messages: list[ChatMessage] = field(default_factory=list)


@dataclass
class _Outcome:
    """A reply as it arrives from any backend: its tokens or text, and how it ended."""

    finish: str | None = None  # "stop" or "length"; None while (or if) the backend has not said
    steps: int = 0  # tokens (or text pieces) received
    ids: list[int] = field(default_factory=list)  # a local model's reply tokens
    parts: list[str] = field(default_factory=list)  # a remote model's reply text
    completion_tokens: int | None = None  # as a remote server counted them
    prompt_tokens: int | None = None

    def text(self, tokenizer) -> str:
        return "".join(self.parts) if self.parts else tokenizer.decode(self.ids) if self.ids else ""


def _generate(backend: Backend, plan: PromptPlan, params: GenerationParams, cancel: threading.Event | None,
              out: _Outcome) -> Iterator["TokenEvent"]:
    """TokenEvents of one reply, from a local model (token ids) or a remote one (text); `out`
    collects what came and how it ended."""
    if getattr(backend, "takes_messages", False):
        texts = backend.stream_text(plan.messages, params, cancel)
        try:
            for step in texts:
                if step.completion_tokens is not None:
                    out.completion_tokens, out.prompt_tokens = step.completion_tokens, step.prompt_tokens
                out.finish = step.finish or out.finish
                if step.text:
                    out.steps += 1
                    out.parts.append(step.text)
                    yield TokenEvent(step.text, -1, 0.0)
        finally:
            texts.close()
        return
    tokenizer = backend.tokenizer
    decoder = StreamDecoder(tokenizer)
    steps = backend.stream(plan.ids, params, cancel)
    try:
        for step in steps:
            out.steps += 1
            if step.token_id in tokenizer.stop_ids:
                out.finish = "stop"
                return
            out.ids.append(step.token_id)
            yield TokenEvent(decoder.push(step.token_id), step.token_id, step.logprob)
    finally:
        getattr(steps, "close", lambda: None)()  # a generator: the model stops now (any iterator will do)
    out.finish = out.finish or "length"


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
    fixed = [system] if system else []
    turns = _turns(history)
    everything = chatml.encode(fixed + history + current, tokenizer, add_generation_prompt=True)
    lengths = iter(everything.lengths)  # per message, in order; with a model's own template, close to additive
    fixed_len = sum(next(lengths) for _ in fixed)
    turn_lens = [sum(next(lengths) for _ in turn) for turn in turns]
    fixed_len += sum(lengths)  # the current messages and the turn opening
    room = context_length - fixed_len
    if room < 1:
        raise ContextOverflow(
            f"the message is too long for the model: {fixed_len} prompt tokens, "
            f"context limit {context_length}. Shorten it or use a model with a longer context."
        )
    budget = min(max_new_tokens, room)
    start = 0
    while True:
        while start < len(turns) and sum(turn_lens[start:]) + budget > room:
            start += 1
        messages = fixed + [m for turn in turns[start:] for m in turn] + current
        ids = chatml.encode(messages, tokenizer, add_generation_prompt=True).ids
        if len(ids) + budget <= context_length or start == len(turns):
            break
        start += 1  # a template that renders turns differently once earlier ones are gone: drop one more
    dropped = sum(len(t) for t in turns[:start])
    budget = min(budget, context_length - len(ids))
    if budget < 1:
        raise ContextOverflow(
            f"the message is too long for the model: {len(ids)} prompt tokens, "
            f"context limit {context_length}. Shorten it or use a model with a longer context."
        )
    return PromptPlan(ids=ids, dropped_messages=dropped, max_new_tokens=budget, messages=messages)


def stored_settings(store: Store, conversation_id: int, current: ChatSettings) -> ChatSettings:
    """`current` with a stored conversation's own settings and system prompt taken over
    (ConversationNotFound if the id is unknown); the model stays current's."""
    conv = store.get_conversation(conversation_id)
    return current.resumed(ChatSettings.from_dict(conv.settings, system_prompt=conv.system_prompt))


def open_session(settings: ChatSettings, store: Store | None = None, conversation_id: int | None = None,
                 backend: Backend | None = None, collection: "Collection | None" = None,
                 report: Callable[[str], None] | None = None) -> "ChatSession":
    """The one way a chat is opened: a new conversation, or a stored one to continue.

    The conversation and the collection are checked before the model loads (a typo fails fast).
    `backend` is a model already loaded for these settings, else it is loaded here; `collection`
    is settings.collection already opened (an evaluation's own), else it is opened by name.
    """
    conversation = None
    if conversation_id is not None:
        if store is None:
            raise HearthError("continuing a conversation needs history; drop --no-history")
        conversation = store.get_conversation(conversation_id)
    if collection is None:
        collection = open_sources(settings, report)
    if backend is None:
        from backends.registry import load_for

        backend = load_for(settings, report)
    session = ChatSession(backend, settings, store=store, collection=collection)
    if conversation is not None:
        session.conversation = conversation
        session.messages = [m for m in store.messages(conversation.id) if m.role != "system"]
    return session


def open_sources(settings: ChatSettings, report: Callable[[str], None] | None = None) -> "Collection | None":
    """What grounded answers read: the settings' collection, or their attached files, or None."""
    if settings.attachments:
        from retrieval.attach import attach

        return attach(settings.attachments, report)
    return open_collection(settings.collection)


def _sources_name(settings: ChatSettings) -> str | None:
    from retrieval.attach import ATTACHED

    return ATTACHED if settings.attachments else settings.collection


def open_collection(name: str | None) -> "Collection | None":
    """The named document collection (HearthError if there is none), or None."""
    if name is None:
        return None
    from retrieval.collection import Collection

    return Collection(name, create=False)


class ChatSession:
    """One conversation bound to a backend and its settings, stored as it goes (unless store is None)."""

    def __init__(self, backend: Backend, settings: ChatSettings | None = None, store: Store | None = None,
                 collection: "Collection | None" = None, save_every_s: float = SAVE_EVERY_S):
        """Prefer open_session; `collection` is settings.collection already opened."""
        self.backend = backend
        self.settings = settings or ChatSettings()
        if (collection.name if collection else None) != _sources_name(self.settings):
            raise ValueError("collection must be the opened settings.collection (or attachments)")
        self.collection = collection
        self.store = store
        self.save_every_s = save_every_s  # how often a streaming reply is written to the store
        self.conversation: Conversation | None = None
        self.messages: list[Message] = []
        self.last_plan: PromptPlan | None = None
        self._prepare_grounded()

    @property
    def conversation_id(self) -> int | None:
        return self.conversation.id if self.conversation else None

    # -- settings ---------------------------------------------------------------------------------
    def configure(self, opened: "Collection | None" = None, **changes) -> ChatSettings:
        """Change settings for the next replies (new sources are opened first, unless `opened` holds
        them already); stored with the conversation. Model fields are the caller's to reload: set
        `backend` to the loaded one."""
        settings = self.settings.replace(**changes)
        if opened is not None:
            self.collection = opened
        elif (settings.collection, settings.attachments) != (self.settings.collection, self.settings.attachments):
            self.collection = open_sources(settings)
        self.settings = settings
        self.save_settings()
        self._prepare_grounded()
        return settings

    def _prepare_grounded(self) -> None:
        """With sources attached, let the backend ready its grounded-answer weights in the background
        (the scratch backend merges its adapter on first use; prepare_grounded)."""
        prepare = getattr(self.backend, "prepare_grounded", None)
        if prepare is not None and self.collection is not None and self.settings.grounded_adapter:
            prepare()

    def save_settings(self) -> None:
        """Store the settings and the model with the conversation, if it is stored and they changed
        (an unchanged conversation keeps its place in the history)."""
        conv = self.conversation
        if self.store is None or conv is None:
            return
        now = {"settings": self.settings.to_dict(), "system_prompt": self.settings.system_prompt,
               "backend": self.backend.name, "model": self.backend.model_id}
        if any(getattr(conv, name) != value for name, value in now.items()):
            self.store.update_conversation(conv.id, **now)
            for name, value in now.items():
                setattr(conv, name, value)

    def _ensure_conversation(self, first_user_text: str) -> None:
        if self.store is None or self.conversation is not None:
            return
        title = " ".join(first_user_text.split())[:TITLE_CHARS] or "New conversation"
        self.conversation = self.store.create_conversation(
            Conversation(
                title=title,
                system_prompt=self.settings.system_prompt,
                backend=self.backend.name,
                model=self.backend.model_id,
                settings=self.settings.to_dict(),
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

    # -- editing the conversation -------------------------------------------------------------------
    def _forget(self, messages: list[Message]) -> None:
        for m in messages:
            if self.store is not None and m.id is not None:
                self.store.delete_message(m.id)

    def clear(self) -> None:
        """Delete every message (the conversation and its settings stay)."""
        self._forget(self.messages)
        self.messages.clear()

    def delete_last_message(self) -> Message | None:
        """Delete the newest message; returns it (None when there is none)."""
        if not self.messages:
            return None
        message = self.messages.pop()
        self._forget([message])
        return message

    def drop_last_exchange(self) -> str | None:
        """Delete the last user message and everything after it; returns that message's text."""
        users = [i for i, m in enumerate(self.messages) if m.role == "user"]
        if not users:
            return None
        dropped = self.messages[users[-1]:]
        self._forget(dropped)
        del self.messages[users[-1]:]
        return dropped[0].content

    def edit_last(self, text: str, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Replace the last user message by `text` and answer it anew."""
        if self.drop_last_exchange() is None:
            raise HearthError("there is no message to edit yet")
        yield from self.send(text, cancel)

    def last_reply(self) -> Message | None:
        """The newest assistant message, if any."""
        return next((m for m in reversed(self.messages) if m.role == "assistant"), None)

    def mark_verdict(self, number: int, right: bool) -> dict:
        """Label the number-th checked sentence of the last reply: its verdict was right or wrong
        (grounding.feedback). The label is stored with the reply; returns the sentence."""
        from assistant.grounding import feedback

        reply = self.last_reply()
        if reply is None or not feedback.checked_sentences(reply.checks):
            raise HearthError("the last reply has no checked sentences to mark (answers from documents are "
                              "checked, and any answer with /check on)")
        sentence = feedback.mark(reply.checks, number, right)
        if self.store is not None and reply.id is not None:
            self.store.update_checks(reply.id, reply.checks)
        return sentence

    def last_code_block(self) -> str:
        """The body of the last fenced code block in the last reply (HearthError if it has none)."""
        reply = self.last_reply()
        blocks = reply.content.split("```")[1::2] if reply else []
        if not blocks:
            raise HearthError("the last reply has no code block")
        block = blocks[-1]
        return block.split("\n", 1)[1] if "\n" in block else block

    def export(self, fmt: str) -> str:
        """This conversation in an export format (export.FORMATS); HearthError before the first message."""
        from assistant.export import export

        if self.store is None or self.conversation is None:
            raise HearthError("nothing to export yet")
        conv = self.store.get_conversation(self.conversation.id)
        return export(conv, self.store.messages(conv.id), fmt)

    def take_history(self, messages: list[ChatMessage]) -> None:
        """Start from earlier turns held elsewhere (a served request carries its whole conversation);
        stored like the session's own when it stores."""
        first_user = next((m.content for m in messages if m.role == "user"), None)
        if first_user is not None:
            self._ensure_conversation(first_user)
        for m in messages:
            status = "stop" if m.role == "assistant" else "complete"
            self.messages.append(self._save(Message(role=m.role, content=m.content, status=status)))

    # -- replies ------------------------------------------------------------------------------------
    def history_for_model(self) -> list[ChatMessage]:
        """Stored messages as the model sees them (failed replies left out)."""
        return [
            ChatMessage(m.role, m.content)
            for m in self.messages
            if not (m.role == "assistant" and m.status == "error")
        ]

    def plan(self, current: list[ChatMessage], history: list[ChatMessage]) -> PromptPlan:
        """Fit system prompt, history and the current turn into the backend's context."""
        prompt = self.settings.system_prompt
        system = ChatMessage("system", prompt) if prompt else None
        return fit_context(system, history, current, self.backend.tokenizer,
                           self.backend.context_length, self.settings.max_new_tokens)

    def send(self, user_text: str, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Store the user turn, then stream the reply as events; the reply is stored as it streams."""
        history = self.history_for_model()
        plan, sources = self._plan_turn(user_text, history)  # raises before anything is stored
        self._ensure_conversation(user_text)
        self.save_settings()  # a continued conversation records what answers it now
        self.messages.append(self._save(Message(role="user", content=user_text)))
        yield from self._reply(user_text, history, plan, sources, cancel)

    def regenerate(self, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Replace the last reply with a new one for the same user turn."""
        if self.messages and self.messages[-1].role == "assistant":
            self.delete_last_message()
        if not self.messages or self.messages[-1].role != "user":
            raise HearthError("there is no user message to answer")
        history = self.history_for_model()
        question, history = history[-1].content, history[:-1]
        plan, sources = self._plan_turn(question, history)
        yield from self._reply(question, history, plan, sources, cancel)

    def _plan_turn(self, text: str, history: list[ChatMessage]) -> "tuple[PromptPlan | None, list[Source] | None]":
        """The prompt for a user turn; with documents on, also its sources (plan None = abstain)."""
        if self.collection is None:
            return self.plan([ChatMessage("user", text)], history), None
        from assistant import rag

        # the grounded-answer adapter was trained on focused evidence, so it is given the same layout
        sources, relevant = rag.retrieve(self.collection, text, self.settings.k,
                                         focus=rag.ADAPTER_FOCUS if self._grounded_adapter() else 0)
        if not relevant:
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
        wanted = self.settings.max_new_tokens
        try:
            plan = fit_context(system, history, current, self.backend.tokenizer, self.backend.context_length, wanted)
        except ContextOverflow:
            return None
        return plan if plan.max_new_tokens >= min(wanted, 256) else None

    def _grounded_adapter(self) -> bool:
        """Whether grounded answers go through the backend's grounded-answer adapter."""
        return bool(getattr(self.backend, "grounded_adapter", None)) and self.settings.grounded_adapter

    def _new_reply(self, sources: "list[Source] | None", content: str = "", status: str = "interrupted") -> Message:
        s = self.settings
        return Message(role="assistant", content=content, status=status, backend=self.backend.name,
                       model=self.backend.model_id, sources=[src.to_dict() for src in sources or []],
                       settings={"sampling": s.sampling.to_dict(), "max_new_tokens": s.max_new_tokens,
                                 "precision": self.backend.precision, "adapter": self.backend.adapter}
                       | ({"grounded_adapter": self.backend.grounded_adapter}
                          if sources is not None and self._grounded_adapter() else {})
                       | ({"base_url": self.backend.base_url} if hasattr(self.backend, "base_url") else {}))

    def _reply(self, question: str, history: list[ChatMessage], plan: PromptPlan | None,
               sources: "list[Source] | None", cancel: threading.Event | None) -> Iterator[Event]:
        """Stream the reply, then check it and apply the policy; store it; end with a DoneEvent."""
        if plan is None:  # the documents hold nothing relevant: abstain without a model call
            from assistant.rag import ABSTAIN

            reply = self._new_reply(sources, ABSTAIN, status="stop")
            self.messages.append(self._save(reply))
            yield TokenEvent(ABSTAIN, -1, 0.0)
            yield DoneEvent(reply, "stop", reply.timings)
            return
        reply = self._new_reply(sources)
        finish, error = yield from self._stream(plan, reply, cancel)
        checked = sources is not None or self.settings.check
        if checked and finish in ("stop", "length") and reply.content.strip():
            self._save(reply)  # still "interrupted": the check (and a retry) can take a while
            try:
                reply.content, reply.checks = self._checked(question, history, reply.content, sources, cancel)
            except Exception as exc:  # the reply is kept even when its check fails
                log.exception("grounding check failed")
                error = error or f"grounding check failed: {type(exc).__name__}: {exc}"
        reply.status = finish
        self.messages.append(self._save(reply))
        yield DoneEvent(reply, finish, reply.timings, error)

    def _stream(self, plan: PromptPlan, reply: Message, cancel: threading.Event | None):
        """Yield TokenEvents into `reply`, which is stored as "interrupted" every save_every_s (so a
        crash loses at most that much); returns (finish reason, error). If the consumer stops
        listening (window closed) or Ctrl+C interrupts, the reply so far is stored as cancelled."""
        self.last_plan = plan
        tokenizer = self.backend.tokenizer
        out = _Outcome()
        finish, error = "length", None
        start = saved_at = time.perf_counter()
        first_at = last_at = None

        def settle() -> None:
            reply.content = out.text(tokenizer)
            steps = out.steps
            reply.timings = Timings(
                ttft_s=(first_at - start) if first_at else None,
                decode_tok_s=((steps - 1) / (last_at - first_at)) if steps > 1 and last_at > first_at else None,
                prompt_tokens=out.prompt_tokens or len(plan.ids),
                completion_tokens=out.completion_tokens or steps,
            )

        events = _generate(self.backend, plan, self._params(self.settings.sampling, plan.max_new_tokens), cancel, out)
        try:
            for event in events:
                last_at = time.perf_counter()
                first_at = first_at or last_at
                if last_at - saved_at >= self.save_every_s:
                    reply.content = out.text(tokenizer)
                    self._save(reply)
                    saved_at = last_at
                yield event
            if out.finish != "stop" and cancel is not None and cancel.is_set():
                finish = "cancelled"
            elif out.finish is None:  # a remote stream that ended without saying why
                finish, error = "error", "the reply stream ended before the reply did"
            else:
                finish = out.finish
        except (GeneratorExit, KeyboardInterrupt):  # Ctrl+C may land inside the model's step
            events.close()
            settle()
            reply.status = "cancelled"
            self.messages.append(self._save(reply))
            raise
        except Exception as exc:  # a backend failure ends this reply, not the session
            log.exception("generation failed")
            finish, error = "error", str(exc) if isinstance(exc, HearthError) else f"{type(exc).__name__}: {exc}"
        events.close()
        settle()
        return finish, error

    def _checked(self, question: str, history: list[ChatMessage], answer: str, sources: "list[Source] | None",
                 cancel: threading.Event | None) -> tuple[str, dict]:
        """(content, checks as stored) of an answer: checked, then the unsupported-answer policy applied."""
        samples = self._samples(cancel)  # once per reply: a retry is compared with them too
        content, checks = self._check(question, answer, sources, samples)
        policy = self.settings.on_unsupported
        if checks.supported or sources is None or policy == "annotate":
            return content, checks.to_dict()
        if policy == "abstain":
            from assistant.rag import ABSTAIN

            return ABSTAIN, {"score": checks.score, "threshold": checks.threshold, "sentences": [],
                             "policy": "abstain", "replaced": content}
        plan = self._grounded_plan(question, history, sources, strict=True)  # regenerate
        if plan is None or (cancel is not None and cancel.is_set()):
            return content, checks.to_dict()
        retry = self._complete(plan, self._params(self.settings.sampling, plan.max_new_tokens), cancel)
        if not retry.strip():
            return content, checks.to_dict()
        retry, retry_checks = self._check(question, retry, sources, samples)
        keep = (retry, retry_checks) if (retry_checks.score or 0) > (checks.score or 0) else (content, checks)
        return keep[0], keep[1].to_dict() | {"policy": "regenerate", "retried": True}

    def _check(self, question: str, answer: str, sources: "list[Source] | None", samples: list[str]):
        """(answer with citations added, its Checks) against the sources, or against the conversation."""
        from assistant import grounding, rag

        kind = check_kind(sources is not None)
        if sources is not None:
            checks = grounding.check(answer, [(s.chunk_id, s.text) for s in sources], self.collection.embedder,
                                     question=question, samples=samples, kind=kind,
                                     chunks=[s.chunk_text or s.text for s in sources])
            rag.locate_receipts(checks, sources)
            rag.flag_unknown_citations(checks, sources)
            return rag.add_citations(answer, checks, sources), checks
        from retrieval.embedder import shared_embedder

        # without documents, what the user said is all an answer can be grounded in
        said = [(i, m.content) for i, m in enumerate(self.messages) if m.role == "user"]
        return answer, grounding.check(answer, said, shared_embedder(), question=question, samples=samples, kind=kind)

    def _complete(self, plan: PromptPlan, params: GenerationParams, cancel: threading.Event | None) -> str:
        """A whole reply to the plan, not streamed (for retries and self-consistency samples)."""
        out = _Outcome()
        for _event in _generate(self.backend, plan, params, cancel, out):
            pass
        return out.text(self.backend.tokenizer)

    def _params(self, sampling, max_new_tokens: int) -> GenerationParams:
        """Generation parameters for this session's replies: grounded ones may use the backend's
        grounded-answer adapter (ChatSettings.grounded_adapter)."""
        grounded = self.settings.grounded and self.settings.grounded_adapter
        return GenerationParams(sampling, max_new_tokens, grounded=grounded)

    def _samples(self, cancel: threading.Event | None) -> list[str]:
        """self_check re-sampled answers to the last prompt (balanced preset), for self-consistency."""
        from backends.params import PRESETS

        if not self.settings.self_check or self.last_plan is None:
            return []
        params = self._params(PRESETS["balanced"], self.last_plan.max_new_tokens)
        return [self._complete(self.last_plan, params, cancel) for _ in range(self.settings.self_check)]
