import threading

import pytest

from assistant.chatml import ChatMessage
from assistant.conversation import ChatSession, DoneEvent, TokenEvent, fit_context, open_session, stored_settings
from assistant.errors import ContextOverflow
from assistant.settings import ChatSettings
from assistant.store import Store
from backends.base import TokenStep
from backends.params import GREEDY, SamplingParams


def _history(n_turns):
    out = []
    for i in range(n_turns):
        out += [ChatMessage("user", f"question number {i} about foxes"),
                ChatMessage("assistant", f"answer number {i} about dogs")]
    return out


def test_fit_context_keeps_system_and_newest_turns_within_limit(tiny_tokenizer):
    system = ChatMessage("system", "You are helpful.")
    current = [ChatMessage("user", "the newest question")]
    history = _history(20)
    for limit in (80, 120, 200, 400):
        plan = fit_context(system, history, current, tiny_tokenizer, limit, max_new_tokens=30)
        assert len(plan.ids) + plan.max_new_tokens <= limit
        text = tiny_tokenizer.decode(plan.ids, skip_special=False)
        assert text.startswith("<|im_start|>system\nYou are helpful.<|im_end|>")
        assert text.endswith("<|im_start|>user\nthe newest question<|im_end|>\n<|im_start|>assistant\n")
        kept = history[plan.dropped_messages:]
        assert plan.dropped_messages % 2 == 0  # whole turns only
        if kept:  # the kept messages are the newest ones, in order
            assert "answer number 19" in text
            assert f"question number {plan.dropped_messages // 2} about" in text
        if plan.dropped_messages:
            assert "question number 0 about" not in text


def test_fit_context_without_truncation_keeps_everything(tiny_tokenizer):
    history = _history(3)
    plan = fit_context(None, history, [ChatMessage("user", "q")], tiny_tokenizer, 10_000, 100)
    assert plan.dropped_messages == 0 and plan.max_new_tokens == 100


def test_fit_context_shrinks_reply_budget_then_overflows(tiny_tokenizer):
    current = [ChatMessage("user", "word " * 30)]
    prompt_len = len(fit_context(None, [], current, tiny_tokenizer, 10_000, 1).ids)
    plan = fit_context(None, [], current, tiny_tokenizer, prompt_len + 5, 10_000)
    assert (len(plan.ids), plan.max_new_tokens) == (prompt_len, 5)
    with pytest.raises(ContextOverflow, match="too long"):
        fit_context(None, [], current, tiny_tokenizer, prompt_len, 10)


class ScriptedBackend:
    """Deterministic edge cases: yields a fixed token script, optionally failing."""

    name = "scripted"
    model_id = "script"
    precision = "fp32"
    adapter = None
    context_length = 4096

    def __init__(self, tokenizer, script, fail_after=None):
        self.tokenizer = tokenizer
        self.script = script
        self.fail_after = fail_after

    def stream(self, prompt_ids, params, cancel=None):
        for i, token in enumerate(self.script[: params.max_new_tokens]):
            if cancel is not None and cancel.is_set():
                return
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("device lost")
            yield TokenStep(token, -0.5)
            if token in self.tokenizer.stop_ids:
                return


def _run(session, text, cancel=None, stop_after=None):
    pieces, done = [], None
    for event in session.send(text, cancel):
        if isinstance(event, TokenEvent):
            pieces.append(event.text)
            if stop_after is not None and len(pieces) == stop_after:
                cancel.set()
        else:
            done = event
    return "".join(pieces), done


def test_stream_events_stop_at_im_end_and_are_stored(tiny_tokenizer, tmp_path):
    script = tiny_tokenizer.encode("Hello there friend") + [tiny_tokenizer.im_end_id, 5, 6]
    store = Store(tmp_path / "h.db")
    session = ChatSession(ScriptedBackend(tiny_tokenizer, script), store=store)
    text, done = _run(session, "hi")
    assert text == "Hello there friend" == done.message.content
    assert done.finish_reason == "stop"
    assert done.timings.completion_tokens == len(script) - 2
    stored = store.messages(session.conversation_id)
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "hi", "complete"), ("assistant", "Hello there friend", "stop")]


def test_cancel_mid_stream_keeps_partial_reply(tiny_tokenizer, tmp_path):
    script = tiny_tokenizer.encode("one two three four five six") + [tiny_tokenizer.im_end_id]
    store = Store(tmp_path / "h.db")
    session = ChatSession(ScriptedBackend(tiny_tokenizer, script), store=store)
    text, done = _run(session, "count", threading.Event(), stop_after=3)
    assert done.finish_reason == "cancelled"
    assert done.message.content == tiny_tokenizer.decode(script[:3]) == text
    assert store.messages(session.conversation_id)[-1].status == "cancelled"
    assert store.messages(session.conversation_id)[-1].content == text


def test_consumer_closing_the_stream_stores_partial_as_cancelled(tiny_tokenizer, tmp_path):
    script = tiny_tokenizer.encode("alpha beta gamma delta") + [tiny_tokenizer.im_end_id]
    store = Store(tmp_path / "h.db")
    session = ChatSession(ScriptedBackend(tiny_tokenizer, script), store=store)
    events = session.send("go")
    next(events), next(events)
    events.close()  # what Ctrl+C in the CLI does
    last = store.messages(session.conversation_id)[-1]
    assert (last.role, last.status, last.content) == ("assistant", "cancelled", tiny_tokenizer.decode(script[:2]))


def test_streaming_reply_is_stored_as_it_streams(tiny_tokenizer, tmp_path):
    script = tiny_tokenizer.encode("red green blue yellow") + [tiny_tokenizer.im_end_id]
    store = Store(tmp_path / "h.db")
    session = ChatSession(ScriptedBackend(tiny_tokenizer, script), store=store, save_every_s=0)
    events = session.send("colours")
    for _ in range(3):
        next(events)
    # what another process (or this one after a crash) finds on disk mid-reply
    on_disk = Store(tmp_path / "h.db").messages(session.conversation_id)
    assert [(m.role, m.status) for m in on_disk] == [("user", "complete"), ("assistant", "interrupted")]
    assert on_disk[1].content == tiny_tokenizer.decode(script[:3])
    done = list(events)[-1]
    # the end of the reply overwrites that row: one reply, with its real status
    stored = Store(tmp_path / "h.db").messages(session.conversation_id)
    assert [(m.role, m.status, m.content) for m in stored] == [
        ("user", "complete", "colours"), ("assistant", "stop", "red green blue yellow")]
    assert stored[1].id == done.message.id and stored[1].timings == done.timings


def test_backend_error_ends_reply_with_error_and_keeps_user_turn(tiny_tokenizer, tmp_path):
    script = tiny_tokenizer.encode("partial answer here")
    store = Store(tmp_path / "h.db")
    session = ChatSession(ScriptedBackend(tiny_tokenizer, script, fail_after=2), store=store)
    _, done = _run(session, "q")
    assert done.finish_reason == "error" and "device lost" in done.error
    assert [m.status for m in store.messages(session.conversation_id)] == ["complete", "error"]
    # a failed reply is not shown to the model on the next turn
    assert [m.role for m in session.history_for_model()] == ["user"]


def test_length_finish_when_max_tokens_reached(tiny_hf_backend):
    session = ChatSession(tiny_hf_backend, ChatSettings(sampling=GREEDY, max_new_tokens=7))
    _, done = _run(session, "hello")
    if done.finish_reason != "stop":
        assert done.finish_reason == "length" and done.timings.completion_tokens == 7


def test_greedy_decoding_is_deterministic(tiny_hf_backend):
    def reply():
        return _run(ChatSession(tiny_hf_backend, ChatSettings(sampling=GREEDY, max_new_tokens=20)), "hello")[1].message.content

    assert reply() == reply()


def test_seeded_sampled_reply_is_reproducible(tiny_hf_backend):
    def reply(seed):
        params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=seed)
        session = ChatSession(tiny_hf_backend, ChatSettings(sampling=params, max_new_tokens=25))
        return [e.token_id for e in session.send("hello") if isinstance(e, TokenEvent)]

    assert reply(3) == reply(3)
    assert reply(3) != reply(4)


def test_resume_continues_stored_conversation_and_regenerate_replaces_reply(tiny_tokenizer, tmp_path):
    script = tiny_tokenizer.encode("first reply") + [tiny_tokenizer.im_end_id]
    store = Store(tmp_path / "h.db")
    backend = ScriptedBackend(tiny_tokenizer, script)
    session = ChatSession(backend, ChatSettings(system_prompt="Be brief."), store=store)
    _run(session, "one")
    settings = stored_settings(store, session.conversation_id, ChatSettings())
    resumed = open_session(settings, store, session.conversation_id, backend=backend)
    assert resumed.settings.system_prompt == "Be brief."
    assert [m.content for m in resumed.messages] == ["one", "first reply"]
    backend.script = tiny_tokenizer.encode("second reply") + [tiny_tokenizer.im_end_id]
    done = [e for e in resumed.regenerate() if isinstance(e, DoneEvent)][0]
    assert done.message.content == "second reply"
    assert [m.content for m in store.messages(session.conversation_id)] == ["one", "second reply"]


def test_ctrl_c_inside_the_model_stores_the_partial_reply_as_cancelled(tiny_tokenizer, tmp_path):
    script = tiny_tokenizer.encode("alpha beta gamma delta") + [tiny_tokenizer.im_end_id]

    class Interrupted(ScriptedBackend):
        def stream(self, prompt_ids, params, cancel=None):
            for i, step in enumerate(super().stream(prompt_ids, params, cancel)):
                if i == 2:
                    raise KeyboardInterrupt  # what Ctrl+C does while a decode step runs
                yield step

    store = Store(tmp_path / "h.db")
    session = ChatSession(Interrupted(tiny_tokenizer, script), store=store)
    with pytest.raises(KeyboardInterrupt):
        list(session.send("go"))
    last = store.messages(session.conversation_id)[-1]
    assert (last.role, last.status, last.content) == ("assistant", "cancelled", tiny_tokenizer.decode(script[:2]))
