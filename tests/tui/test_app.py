"""Pilot tests of the chat UI, driving it as a user does, with a tiny real model."""

import json
import time
from pathlib import Path

import pytest

from assistant.records import Conversation, Message
from assistant.settings import ChatSettings
from assistant.store import Store
from backends.hf.backend import HFBackend
from retrieval.search import search
from tui.app import HearthApp
from tui.screens import HelpScreen, PromptScreen
from tui.widgets import ChatInput, MessageBox
from tests.tui.pilot import SIZE, ready, settle, until, say

class GatedBackend:
    """The tiny model, pausing after `gate` tokens until the reply is cancelled (for Esc tests)."""

    def __init__(self, inner, gate=3):
        self.inner, self.gate = inner, gate
        self.name, self.tokenizer, self.context_length = inner.name, inner.tokenizer, inner.context_length
        self.model_id, self.precision, self.adapter = inner.model_id, inner.precision, inner.adapter

    def stream(self, prompt_ids, params, cancel=None):
        for i, step in enumerate(self.inner.stream(prompt_ids, params, cancel)):
            yield step
            if i + 1 == self.gate:
                while cancel is not None and not cancel.is_set():
                    time.sleep(0.01)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "h.db")


@pytest.fixture
def make_app(store, tiny_llama_dir, tmp_path):
    def make(loader=None, **kwargs):
        backend = HFBackend(tiny_llama_dir)
        return HearthApp(store=store, loader=loader or (lambda settings: backend), export_dir=tmp_path, **kwargs)
    return make


def status(app):
    return app.status_note


async def test_send_streams_and_stores(make_app, store):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "hello fox")
        boxes = list(app.query(MessageBox))
        assert [b.role for b in boxes] == ["user", "assistant"]
        [conv] = store.list_conversations()
        msgs = store.messages(conv.id)
        assert [m.role for m in msgs] == ["user", "assistant"] and msgs[0].content == "hello fox"
        assert boxes[1].body.source == msgs[1].content
        assert msgs[1].backend == "hf"
        assert "ctx " in str(app.query_one("#status").render())


async def test_escape_stops_and_keeps_partial(make_app, store, tiny_llama_dir):
    gated = GatedBackend(HFBackend(tiny_llama_dir), gate=3)
    app = make_app(loader=lambda settings: gated)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        app.query_one("#input", ChatInput).load_text("count for me")
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause(0.05)
            if app.generating and app.session.messages:
                break
        await pilot.pause(0.3)
        await pilot.press("escape")
        await settle(pilot, app)
        reply = store.messages(app.conversation_id)[-1]
        assert reply.status == "cancelled" and reply.timings.completion_tokens == 3
        assert "stopped" in list(app.query(MessageBox))[-1].header_text


async def test_regenerate_replaces_the_last_reply(make_app, store):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await app.run_slash("/temp", "1.0")
        await say(pilot, app, "tell me")
        first = store.messages(app.conversation_id)[-1]
        await pilot.press("ctrl+r")
        await settle(pilot, app)
        msgs = store.messages(app.conversation_id)
        assert [m.role for m in msgs] == ["user", "assistant"] and msgs[-1].created_at != first.created_at
        assert len(list(app.query(MessageBox))) == 2


async def test_edit_and_resend(make_app, store):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "first try")
        await pilot.press("ctrl+e")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PromptScreen)
        prompt = app.screen.query_one("#prompt-input")
        prompt.value = "second try"
        await pilot.press("enter")
        await settle(pilot, app)
        msgs = store.messages(app.conversation_id)
        assert [m.content for m in msgs if m.role == "user"] == ["second try"] and len(msgs) == 2


async def test_switch_rename_search_and_delete_conversations(make_app, store):
    a = store.create_conversation(Conversation(title="about penguins", system_prompt="s"))
    store.add_message(a.id, Message(role="user", content="penguins are birds"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "a new topic")
        new_id = app.conversation_id
        app.open_conversation(a.id)
        await pilot.pause(0.1)
        assert [b.body.source for b in app.query(MessageBox)] == ["penguins are birds"]

        await pilot.press("f2")
        await pilot.pause(0.1)
        app.screen.query_one("#prompt-input").value = "Penguin facts"
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert store.get_conversation(a.id).title == "Penguin facts"

        app.query_one("#search").value = "penguins are"

        def listed():
            return [i.conversation_id for i in app.query_one("#conversations").children if i.is_mounted]
        await until(pilot, lambda: listed() == [a.id])

        await app.run_slash("/delete", "")
        await pilot.pause(0.1)
        assert [c.id for c in store.list_conversations()] == [new_id]


async def test_preset_system_prompt_and_docs_errors(make_app, store):
    from backends.params import PRESETS

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "hi")
        await app.run_slash("/preset", "creative")
        assert app.session.settings.sampling == PRESETS["creative"]
        await app.run_slash("/system", "Answer in one word.")
        assert app.session.settings.system_prompt == "Answer in one word."
        conv = store.get_conversation(app.conversation_id)
        assert conv.system_prompt == "Answer in one word." and ChatSettings.from_dict(conv.settings).preset == "creative"
        await app.run_slash("/preset", "wild")
        assert "unknown preset" in status(app)
        await app.run_slash("/docs", "no-such-collection")
        assert "no collection named" in status(app) and app.session.collection is None


async def test_check_command_sets_the_policy_and_checks_plain_answers(make_app, store, smollm2_dir, tiny_llama_dir):
    from backends.tokenizer import ChatTokenizer
    from tests.helpers import ScriptedBackend

    replies = ["Hello there.", "Miso was born in 2019 in Paris."]
    app = make_app(loader=lambda settings: ScriptedBackend(ChatTokenizer.from_file(tiny_llama_dir), replies))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "hi")
        await app.run_slash("/verdict", "1 wrong")
        assert "the last reply has no checked sentences" in status(app)  # /check was off
        await app.run_slash("/check", "abstain")
        assert app.session.settings.on_unsupported == "abstain"
        assert store.get_conversation(app.conversation_id).settings["on_unsupported"] == "abstain"
        await app.run_slash("/check", "sometimes")
        assert "/check takes" in status(app)
        await app.run_slash("/check", "on")
        assert app.session.settings.check is True
        await say(pilot, app, "My cat Miso was born in 2019.")
        reply = store.messages(app.conversation_id)[-1]
        assert reply.role == "assistant" and reply.checks is not None
        footer = list(app.query(MessageBox))[-1].footer
        assert footer.display and "support" in str(footer.render())
        # the user says the check got sentence 1 wrong: the label is stored with the reply and shown under it
        said = reply.checks["sentences"][0]["verdict"]
        await app.run_slash("/verdict", "1 wrong")
        stored = store.messages(app.conversation_id)[-1].checks["sentences"][0]
        assert stored["verdict"] == said and stored["label"] == {"supported": "unsupported"}.get(said, "supported")
        await until(pilot, lambda: f"you: {stored['label']}" in str(list(app.query(MessageBox))[-1].footer.render()))
        assert f"labelled {stored['label']}" in status(app)
        await app.run_slash("/verdict", "7 right")
        assert "no checked sentence 7" in status(app)
        await app.run_slash("/verdict", "one")
        assert "/verdict takes a sentence number" in status(app)


async def test_switch_backend_mid_chat_records_each_writer(make_app, store, tiny_llama_dir):
    from backends.registry import load_backend

    app = make_app(loader=lambda settings: load_backend(settings.backend, tiny_llama_dir))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "one")
        await app.run_slash("/backend", "scratch")
        for _ in range(100):
            await pilot.pause(0.05)
            if app.backend is not None and app.backend.name == "scratch":
                break
        await say(pilot, app, "two")
        writers = [m.backend for m in store.messages(app.conversation_id) if m.role == "assistant"]
        assert writers == ["hf", "scratch"]


async def test_bad_model_path_is_shown_not_crashed(make_app, tmp_path):
    from backends.registry import load_backend

    app = make_app(loader=lambda settings: load_backend(settings.backend, settings.model))
    async with app.run_test(size=SIZE) as pilot:
        await app.run_slash("/model", str(tmp_path / "missing-model"))
        for _ in range(100):
            await pilot.pause(0.05)
            if "error" in status(app):
                break
        assert "does not exist" in status(app)
        assert app.is_running


async def test_slash_help_completion_and_palette(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        box = app.query_one("#input", ChatInput)
        box.load_text("/pre")
        box.move_cursor(box.document.end)
        await pilot.press("tab")
        assert box.text == "/preset "
        box.load_text("/help")
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause(0.1)
        await pilot.press("f1")
        await pilot.pause(0.1)
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"/system")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.query_one("#input", ChatInput).text == "/system "


async def test_up_recalls_previous_prompt(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "remember me")
        await pilot.press("up")
        assert app.query_one("#input", ChatInput).text == "remember me"


async def test_exports(make_app, store, tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "export this")
        cid = app.conversation_id
        await app.run_slash("/export", f"md {tmp_path / 'c.md'}")
        await app.run_slash("/export", f"json {tmp_path / 'c.json'}")
        await app.run_slash("/export", f"chatml {tmp_path / 'c.jsonl'}")
        await app.run_slash("/export", f"chatml-all {tmp_path / 'all.jsonl'}")
    reply = store.messages(cid)[-1]
    assert "## You\n\nexport this" in (tmp_path / "c.md").read_text()
    data = json.loads((tmp_path / "c.json").read_text())
    assert [m["content"] for m in data["messages"]] == ["export this", reply.content]
    record = json.loads((tmp_path / "c.jsonl").read_text())
    expected_reply = [] if reply.status not in ("stop", "complete") else [{"role": "assistant", "content": reply.content}]
    assert record["messages"][1:] == [{"role": "user", "content": "export this"}] + expected_reply
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == record


async def test_reopening_shows_conversations_as_they_were(make_app, store):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "persist me")
        cid = app.conversation_id
    again = make_app(conversation_id=cid)
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        roles = [b.role for b in again.query(MessageBox)]
        assert roles == ["user", "assistant"]
        assert list(again.query(MessageBox))[0].body.source == "persist me"


async def test_reply_left_by_a_crash_shows_as_interrupted(make_app, store):
    conv = store.create_conversation(Conversation(title="crash", system_prompt="s"))
    store.add_message(conv.id, Message(role="user", content="tell me a story"))
    store.add_message(conv.id, Message(role="assistant", content="Once upon a", status="interrupted",
                                       backend="hf", model="smollm2"))
    app = make_app(conversation_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        boxes = list(app.query(MessageBox))
        assert [b.role for b in boxes] == ["user", "assistant"]
        assert boxes[1].body.source == "Once upon a" and boxes[1].header_text.endswith(" · interrupted")


async def test_attach_and_detach_files(make_app, store, tmp_path):
    (tmp_path / "garden notes.md").write_text("# Garden\n\nTomatoes need six hours of sun.\n")
    (tmp_path / "empty.txt").write_text("")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await app.run_slash("/attach", f"'{tmp_path / 'garden notes.md'}'")
        await until(pilot, lambda: app.session.collection is not None, timeout=60)  # read in a worker
        assert app.session.collection.name == "attached"
        assert app.session.settings.attachments == (str(tmp_path / "garden notes.md"),)
        assert "files: garden notes.md" in status(app)  # (stored with the conversation: tests/test_attach.py)
        await app.run_slash("/detach", "")
        assert app.session.collection is None and app.session.settings.attachments == ()
        await app.run_slash("/attach", str(tmp_path / "empty.txt"))
        await until(pilot, lambda: "none of the attached files could be read" in status(app), timeout=60)
        await app.run_slash("/attach", "")
        assert "/attach needs a file" in status(app)


async def test_the_collection_in_use_follows_its_files_in_the_background(make_app, store, tmp_path, hearth_home,
                                                                        embedder):
    from retrieval.collection import Collection

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("The otter holt is under the alder roots.\n")
    (notes / "b.txt").write_text("Swifts nest in the church tower.\n")
    Collection("wild", embedder=embedder).ingest([notes])
    (notes / "b.txt").write_text("Swifts nest under the eaves of the mill.\n")  # changed while the chat was closed

    def documents() -> dict[str, str]:
        c = Collection("wild", embedder=embedder, create=False)
        try:
            return {Path(p).name: h for p, h in c.db.execute("select path, hash from documents")}
        finally:
            c.close()

    before = documents()
    app = make_app(settings=ChatSettings(collection="wild"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await until(pilot, lambda: documents()["b.txt"] != before["b.txt"], timeout=60)  # synced on open
        app.query_one("#input", ChatInput).load_text("typing while it syncs")  # the UI is not blocked
        await pilot.pause(1.5)  # the watcher is running
        (notes / "c.txt").write_text("A kingfisher perches on the willow.\n")
        (notes / "a.txt").unlink()
        await until(pilot, lambda: set(documents()) == {"b.txt", "c.txt"}, timeout=60)  # followed while open
        await until(pilot, lambda: "docs: wild" in str(app.query_one("#status").render())
                    and "syncing" not in str(app.query_one("#status").render()), timeout=10)
        [hit] = search(app.session.collection, "kingfisher on the willow", k=1)
        assert hit.chunk.path == str(notes / "c.txt")  # the session's searches see the synced rows
        await app.run_slash("/docs", "off")
        assert app._followed is None
