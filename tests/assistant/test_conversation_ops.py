"""Editing a conversation is the conversation layer's job: clear, delete, drop, regenerate, edit,
export and the last code block, each checked against the real history database without the UI."""

import json

import pytest

from assistant.conversation import DoneEvent, open_session, stored_settings
from assistant.errors import HearthError
from assistant.export import export_all
from assistant.settings import ChatSettings
from assistant.store import Store
from tests.helpers import ScriptedBackend

CODE_REPLY = "Here:\n```python\nprint('first')\n```\nand\n```sh\necho second\n```\nDone."


def talk(session, text):
    return [e for e in session.send(text) if isinstance(e, DoneEvent)][0].message


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "h.db")


@pytest.fixture
def session(store, tiny_tokenizer):
    backend = ScriptedBackend(tiny_tokenizer, ["one back", "two back", "three back", "four back"])
    session = open_session(ChatSettings(), store, backend=backend)
    talk(session, "one")
    talk(session, "two")
    return session


def stored(store, session):
    return [(m.role, m.content) for m in store.messages(session.conversation_id)]


def test_delete_last_message_removes_it_from_memory_and_disk(session, store):
    gone = session.delete_last_message()
    assert (gone.role, gone.content) == ("assistant", "two back")
    assert stored(store, session) == [("user", "one"), ("assistant", "one back"), ("user", "two")]
    assert [m.content for m in session.messages] == ["one", "one back", "two"]


def test_drop_last_exchange_returns_the_user_text(session, store):
    assert session.drop_last_exchange() == "two"
    assert stored(store, session) == [("user", "one"), ("assistant", "one back")]


def test_edit_last_replaces_the_exchange(session, store):
    list(session.edit_last("TWO"))
    assert stored(store, session) == [("user", "one"), ("assistant", "one back"), ("user", "TWO"),
                                      ("assistant", "three back")]


def test_regenerate_replaces_only_the_reply(session, store):
    list(session.regenerate())
    assert stored(store, session)[-2:] == [("user", "two"), ("assistant", "three back")]
    assert len(store.messages(session.conversation_id)) == 4


def test_clear_keeps_the_conversation_and_its_settings(session, store):
    session.configure(max_new_tokens=77)
    session.clear()
    assert stored(store, session) == [] and session.messages == []
    assert store.get_conversation(session.conversation_id).settings["max_new_tokens"] == 77


def test_edit_and_regenerate_without_messages_are_errors(store, tiny_tokenizer):
    session = open_session(ChatSettings(), store, backend=ScriptedBackend(tiny_tokenizer, []))
    with pytest.raises(HearthError, match="no message to edit"):
        list(session.edit_last("x"))
    with pytest.raises(HearthError, match="no user message"):
        list(session.regenerate())
    assert session.delete_last_message() is None and session.drop_last_exchange() is None
    with pytest.raises(HearthError, match="nothing to export"):
        session.export("md")


def test_last_code_block(store, tiny_tokenizer):
    session = open_session(ChatSettings(), store, backend=ScriptedBackend(tiny_tokenizer, ["no code", CODE_REPLY]))
    talk(session, "a")
    with pytest.raises(HearthError, match="no code block"):
        session.last_code_block()
    talk(session, "b")
    assert session.last_code_block() == "echo second\n"


def test_export_one_and_all(session, store, tiny_tokenizer):
    md = session.export("md")
    assert "## You\n\none" in md and "## Assistant\n\ntwo back" in md
    record = json.loads(session.export("chatml"))
    assert [m["content"] for m in record["messages"]][1:] == ["one", "one back", "two", "two back"]
    other = open_session(ChatSettings(), store, backend=ScriptedBackend(tiny_tokenizer, ["sure"]))
    talk(other, "another")
    lines = [json.loads(line) for line in export_all(store).splitlines()]
    assert sorted(len(r["messages"]) for r in lines) == [3, 5]
    with pytest.raises(ValueError, match="unknown export format"):
        session.export("pdf")


def test_settings_are_stored_with_the_conversation_and_come_back(session, store, tiny_tokenizer):
    session.configure(system_prompt="Be brief.", k=5, on_unsupported="abstain")
    back = stored_settings(store, session.conversation_id, ChatSettings(max_new_tokens=5))
    assert (back.system_prompt, back.k, back.on_unsupported) == ("Be brief.", 5, "abstain")
    assert store.get_conversation(session.conversation_id).system_prompt == "Be brief."
    with pytest.raises(HearthError, match="no collection named 'nope'"):
        session.configure(collection="nope")
    assert session.settings.collection is None  # a failed change changes nothing


def test_settings_stored_by_older_versions_still_load(store):
    from assistant.records import Conversation
    from backends.params import PRESETS

    ui = store.create_conversation(Conversation(title="ui", system_prompt="old ui", settings={
        "backend": "hf", "model": None, "adapter": None, "docs": None, "preset": "creative", "sampling": None,
        "max_new_tokens": 100, "on_unsupported": "regenerate", "check": True}))
    cli = store.create_conversation(Conversation(title="cli", system_prompt="old cli", settings={
        "sampling": PRESETS["balanced"].to_dict(), "max_new_tokens": 64}))
    a = stored_settings(store, ui.id, ChatSettings())
    assert (a.sampling, a.max_new_tokens, a.on_unsupported, a.check, a.system_prompt) == (
        PRESETS["creative"], 100, "regenerate", True, "old ui")
    b = stored_settings(store, cli.id, ChatSettings())
    assert (b.sampling, b.max_new_tokens, b.system_prompt, b.k) == (PRESETS["balanced"], 64, "old cli", 3)


def test_opening_a_conversation_changes_nothing_until_it_is_answered(session, store, tiny_tokenizer):
    cid = session.conversation_id
    before = store.get_conversation(cid)
    backend = ScriptedBackend(tiny_tokenizer, ["five back"])
    again = open_session(stored_settings(store, cid, ChatSettings()), store, cid, backend=backend)
    assert store.get_conversation(cid) == before  # same settings, same place in the history
    again.configure(k=4)
    assert store.get_conversation(cid).settings["k"] == 4
