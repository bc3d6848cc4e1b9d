import sqlite3

import pytest
import sqlite_utils

from assistant.errors import ConversationNotFound, StorageError
from assistant.records import Conversation, Message, Timings
from assistant.store import MIGRATIONS, SCHEMA_VERSION, Store


def _conv(store, title="Trip planning"):
    return store.create_conversation(Conversation(title=title, system_prompt="Be kind.", backend="hf",
                                                  model="m", settings={"max_new_tokens": 64}))


def test_round_trip_conversation_and_messages(tmp_path):
    store = Store(tmp_path / "h.db")
    conv = _conv(store)
    reply = Message(role="assistant", content="Sure — 東京 works.", status="stop", backend="hf", model="m",
                    settings={"sampling": {"temperature": 0.2}}, timings=Timings(0.1, 30.5, 40, 7),
                    sources=[{"rank": 1, "path": "a.md"}], checks={"score": 0.9, "sentences": []})
    store.add_message(conv.id, Message(role="user", content="Plan a trip?"))
    store.add_message(conv.id, reply)
    store.close()

    again = Store(tmp_path / "h.db")
    assert again.get_conversation(conv.id) == conv.__class__(**{**conv.to_dict(), "updated_at": again.get_conversation(conv.id).updated_at})
    user, got = again.messages(conv.id)
    assert (user.role, user.content, user.status) == ("user", "Plan a trip?", "complete")
    assert got.to_dict() == reply.to_dict()


def test_wal_mode_and_schema_version(tmp_path):
    store = Store(tmp_path / "h.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)


def test_migrates_a_version_1_database_keeping_its_data(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db["conversations"].insert({"id": 1, "title": "old chat", "system_prompt": "s", "settings": "{}",
                                "created_at": "2025-01-01T00:00:00", "updated_at": "2025-01-01T00:00:00"})
    db["messages"].insert({"conversation_id": 1, "role": "user", "content": "hello from the past",
                           "status": "complete", "settings": "{}", "created_at": "2025-01-01T00:00:00"})
    db.conn.commit()
    db.close()

    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    [msg] = store.messages(1)
    assert (msg.content, msg.sources, msg.checks) == ("hello from the past", [], None)
    assert [c.title for c in store.list_conversations(query="from the past")] == ["old chat"]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer Hearth"):
        Store(path)


def test_list_newest_first_search_and_delete(tmp_path):
    store = Store(tmp_path / "h.db")
    a, _ = _conv(store, "alpha"), _conv(store, "beta")
    store.add_message(a.id, Message(role="user", content="tell me about penguins"))
    assert [c.title for c in store.list_conversations()] == ["alpha", "beta"]
    assert [c.title for c in store.list_conversations(query="penguin")] == ["alpha"]
    assert [c.title for c in store.list_conversations(query="et")] == ["beta"]
    store.delete_conversation(a.id)
    assert [c.title for c in store.list_conversations()] == ["beta"]
    assert store.messages(a.id) == []
    with pytest.raises(ConversationNotFound, match="no conversation with id"):
        store.get_conversation(a.id)


def test_unwritable_home_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="HEARTH_HOME"):
        Store(blocker / "sub" / "h.db")
