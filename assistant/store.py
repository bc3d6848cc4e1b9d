"""The history database: one SQLite file (WAL mode) with conversations and messages."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Callable

import sqlite_utils

from assistant.config import ensure_dir, history_db_path
from assistant.database import connect, guarded, problem, write
from assistant.errors import ConversationNotFound, StorageError
from assistant.records import Conversation, Message, Timings, now_iso


def _v1_base_tables(db: sqlite_utils.Database) -> None:
    db["conversations"].create(
        {
            "id": int,
            "title": str,
            "system_prompt": str,
            "backend": str,
            "model": str,
            "settings": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
    )
    db["messages"].create(
        {
            "id": int,
            "conversation_id": int,
            "role": str,
            "content": str,
            "status": str,
            "backend": str,
            "model": str,
            "settings": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "ttft_s": float,
            "decode_tok_s": float,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("conversation_id", "conversations", "id")],
    )
    db["messages"].create_index(["conversation_id", "id"])


def _v2_sources_and_checks(db: sqlite_utils.Database) -> None:
    db["messages"].add_column("sources", str)
    db["messages"].add_column("checks", str)


def _v3_message_search(db: sqlite_utils.Database) -> None:
    db["messages"].enable_fts(["content"], create_triggers=True, tokenize="trigram")


# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1_base_tables,
    _v2_sources_and_checks,
    _v3_message_search,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _dumps(value) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(text: str | None, default=None):
    return default if text is None else json.loads(text)


WHAT = "the history database"
_guarded = guarded(WHAT)


class Store:
    """Conversations and messages in one SQLite file; every write is its own transaction."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else history_db_path()
        ensure_dir(self.path.parent)
        try:
            self.db = connect(self.path)
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise problem(exc, WHAT, self.path) from exc

    # -- schema -------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        if self.schema_version == SCHEMA_VERSION:
            return
        with write(self.db):  # the version is read again under the lock: another process may have migrated
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} was written by a newer Hearth (schema {version}); upgrade Hearth."
                )
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](self.db)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        self.db.close()

    # -- conversations ------------------------------------------------------------------------
    @_guarded
    def create_conversation(self, conv: Conversation) -> Conversation:
        """Insert a conversation and return it with its id."""
        row = conv.to_dict()
        row.pop("id")
        row["settings"] = _dumps(conv.settings)
        with write(self.db):
            conv.id = self.db["conversations"].insert(row).last_pk
        return conv

    @_guarded
    def get_conversation(self, conversation_id: int) -> Conversation:
        """The conversation with this id, or ConversationNotFound."""
        try:
            row = self.db["conversations"].get(conversation_id)
        except sqlite_utils.db.NotFoundError:
            raise ConversationNotFound(
                f"no conversation with id {conversation_id}; `hearth history list` shows them."
            ) from None
        return self._conversation(row)

    @staticmethod
    def _conversation(row: dict) -> Conversation:
        row = dict(row)
        row["settings"] = _loads(row["settings"], {})
        return Conversation(**row)

    @_guarded
    def list_conversations(self, query: str | None = None, limit: int | None = None) -> list[Conversation]:
        """Conversations, most recently updated first; `query` matches titles and message text."""
        where, args = "", []
        if query:
            like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"  # % and _ are text
            where = (
                "where title like ? escape '\\' or id in (select conversation_id from messages where id in "
                "(select rowid from messages_fts where messages_fts match ?))"
            )
            args = [like, _fts_phrase(query)]
            if len(query) < 3:  # the trigram index cannot match shorter strings
                where = (
                    "where title like ? escape '\\' or id in "
                    "(select conversation_id from messages where content like ? escape '\\')"
                )
                args = [like, like]
        sql = f"select * from conversations {where} order by updated_at desc, id desc"
        if limit:
            sql += f" limit {int(limit)}"
        return [self._conversation(r) for r in self.db.query(sql, args)]

    @_guarded
    def update_conversation(self, conversation_id: int, **fields) -> None:
        """Change title, system_prompt, backend, model or settings."""
        self.get_conversation(conversation_id)
        if "settings" in fields:
            fields["settings"] = _dumps(fields["settings"])
        fields["updated_at"] = now_iso()
        with write(self.db):
            self.db["conversations"].update(conversation_id, fields)

    @_guarded
    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and all its messages."""
        self.get_conversation(conversation_id)
        with write(self.db):
            self.db["messages"].delete_where("conversation_id = ?", [conversation_id])
            self.db["conversations"].delete(conversation_id)

    # -- messages -----------------------------------------------------------------------------
    @staticmethod
    def _row(message: Message) -> dict:
        return {
            "role": message.role,
            "content": message.content,
            "status": message.status,
            "backend": message.backend,
            "model": message.model,
            "settings": _dumps(message.settings),
            "prompt_tokens": message.timings.prompt_tokens,
            "completion_tokens": message.timings.completion_tokens,
            "ttft_s": message.timings.ttft_s,
            "decode_tok_s": message.timings.decode_tok_s,
            "created_at": message.created_at,
            "sources": _dumps(message.sources),
            "checks": _dumps(message.checks),
        }

    @_guarded
    def add_message(self, conversation_id: int, message: Message) -> Message:
        """Append a message and bump the conversation's updated_at, in one transaction."""
        with write(self.db):
            message.id = self.db["messages"].insert({"conversation_id": conversation_id} | self._row(message)).last_pk
            self.db["conversations"].update(conversation_id, {"updated_at": now_iso()})
        message.conversation_id = conversation_id
        return message

    @_guarded
    def replace_message(self, message: Message) -> Message:
        """Overwrite a stored message with every field of `message` (a reply stored as it streams)."""
        with write(self.db):
            self.db["messages"].update(message.id, self._row(message))
            self.db["conversations"].update(message.conversation_id, {"updated_at": now_iso()})
        return message

    @_guarded
    def messages(self, conversation_id: int) -> list[Message]:
        """Messages of a conversation in order."""
        rows = self.db["messages"].rows_where(
            "conversation_id = ?", [conversation_id], order_by="id"
        )
        return [self._message(r) for r in rows]

    @staticmethod
    def _message(row: dict) -> Message:
        return Message(
            id=row["id"],
            conversation_id=row["conversation_id"],
            role=row["role"],
            content=row["content"],
            status=row["status"],
            backend=row["backend"],
            model=row["model"],
            settings=_loads(row["settings"], {}),
            timings=Timings(
                ttft_s=row["ttft_s"],
                decode_tok_s=row["decode_tok_s"],
                prompt_tokens=row["prompt_tokens"] or 0,
                completion_tokens=row["completion_tokens"] or 0,
            ),
            sources=_loads(row["sources"], []),
            checks=_loads(row["checks"]),
            created_at=row["created_at"],
        )

    @_guarded
    def update_checks(self, message_id: int, checks: dict | None) -> None:
        """Overwrite a reply's stored check (a verdict the user labelled); the conversation's
        updated_at stays: labelling is not a new turn."""
        with write(self.db):
            self.db["messages"].update(message_id, {"checks": _dumps(checks)})

    @_guarded
    def labelled_replies(self) -> list[tuple[Message, list[Message]]]:
        """Every reply with a sentence verdict the user labelled (feedback.mark), oldest first, each
        with the messages of its conversation before it."""
        rows = list(self.db.query(
            "select * from messages where role = 'assistant' and checks is not null and exists "
            "(select 1 from json_each(messages.checks, '$.sentences') where json_extract(value, '$.label') "
            "is not null) order by id"))
        out, conversations = [], {}
        for row in rows:
            reply = self._message(row)
            if reply.conversation_id not in conversations:
                conversations[reply.conversation_id] = self.messages(reply.conversation_id)
            out.append((reply, [m for m in conversations[reply.conversation_id] if m.id < reply.id]))
        return out

    @_guarded
    def delete_message(self, message_id: int) -> None:
        """Delete one message."""
        with write(self.db):
            self.db["messages"].delete(message_id)


def _fts_phrase(text: str) -> str:
    """An FTS5 query that matches the text literally."""
    return '"' + text.replace('"', '""') + '"'
