"""Damaged databases and indexes: every command says so in one line, and `hearth doctor` finds and
repairs them (rebuilding what is derived, moving an unreadable file aside, never deleting it)."""

import re
import sqlite3

import pytest

from assistant.records import Conversation, Message
from assistant.store import Store
from retrieval.collection import Collection
from tests.helpers import hearth

PAGE = 4096


def damage(db_path, first_page: int, pages: int) -> None:
    """Overwrite whole pages in the middle of an SQLite file (its header stays intact)."""
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file, none in the WAL
    conn.close()
    with open(db_path, "r+b") as f:
        f.seek(first_page * PAGE)
        f.write(bytes(range(256)) * (pages * PAGE // 256))


def one_line_error(run) -> str:
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = [line for line in re.split(r"[\r\n]", run.stderr) if line and not line.startswith("ingest ")]
    assert len(lines) == 1 and lines[0].startswith("hearth: error: "), run.stderr  # progress bars aside
    return lines[0]


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(30):
        (folder / f"note{i}.txt").write_text(f"Note {i}: the heron by the pond number {i} ate a fish.\n")
    return folder


def test_healthy_home_is_ok(docs, hearth_home):
    hearth("ingest", docs, "--collection", "notes")
    run = hearth("doctor")
    assert run.stdout.splitlines() == ["history: ok (not created yet)",
                                       "collection notes: ok (30 documents, 30 chunks, generation 30)"]


def test_lost_keyword_rows_and_a_stale_faiss_file_are_found_and_rebuilt(docs, hearth_home):
    hearth("ingest", docs, "--collection", "notes")
    c = Collection("notes", create=False)
    old_index = c.index_path.read_bytes()
    (docs / "note3.txt").write_text("Note 3: the heron flew to the river instead.\n")
    hearth("ingest", docs, "--collection", "notes")
    c.index_path.write_bytes(old_index)  # a file saved one commit ago
    c.db.execute("delete from chunks_fts where rowid in (select id from chunks limit 2)")
    c.db.conn.commit()
    c.close()

    run = hearth("doctor", check=False)
    assert run.returncode == 1
    assert "the keyword table has 28 rows for 30 chunks" in run.stdout
    assert "the FAISS index reflects generation 30, the database is at 31" in run.stdout
    repaired = hearth("doctor", "--repair")
    assert "rebuilt the keyword table (30 chunks)" in repaired.stdout
    assert "rebuilt the FAISS index from the stored embeddings (30 vectors)" in repaired.stdout
    assert "collection notes: ok" in hearth("doctor").stdout
    assert "river" in hearth("search", "where did the heron fly", "--collection", "notes", "-k", "1",
                             "--mode", "keyword").stdout


def test_damaged_history_pages_are_one_line_errors_and_repair_keeps_what_can_be_read(hearth_home):
    store = Store()
    written = {}
    for i in range(40):
        conv = store.create_conversation(Conversation(title=f"chat {i}", system_prompt=""))
        for role in ("user", "assistant"):
            text = f"{role} message {i} " + "lorem ipsum " * 80
            written[store.add_message(conv.id, Message(role=role, content=text)).id] = text
    store.close()
    damage(hearth_home / "hearth.db", first_page=12, pages=3)

    assert "hearth doctor" in one_line_error(hearth("history", "list", "--search", "lorem", check=False))
    shown = [hearth("history", "show", i, check=False) for i in range(1, 41)]
    failed = [run for run in shown if run.returncode != 0]
    assert failed and all("hearth doctor" in one_line_error(run) for run in failed)
    found = hearth("doctor", check=False)
    assert found.returncode == 1 and "database disk image is malformed" in found.stdout

    repaired = hearth("doctor", "--repair")
    assert "moved the damaged file to" in repaired.stdout
    assert len(list(hearth_home.glob("hearth.db.damaged-????????-??????"))) == 1  # kept, never deleted
    salvaged = Store().messages
    kept = {m.id: m.content for conv in Store().list_conversations() for m in salvaged(conv.id)}
    assert 0 < len(kept) < len(written)  # the damaged pages' rows are gone, the rest came back intact
    assert all(written[i] == text for i, text in kept.items())
    assert hearth("history", "list", "--search", "lorem").stdout
    assert "history: ok" in hearth("doctor").stdout


def test_damaged_collection_pages_are_one_line_errors_and_repair_moves_it_aside(docs, hearth_home, tiny_llama_dir):
    hearth("ingest", docs, "--collection", "notes")
    folder = hearth_home / "collections" / "notes"
    damage(folder / "collection.db", first_page=5, pages=4)

    (docs / "note7.txt").write_text("Note 7: the heron left.\n")
    ingest = hearth("ingest", docs, "--collection", "notes", check=False)  # fails only if it touches a bad page
    assert ingest.returncode == 0 or "hearth doctor" in one_line_error(ingest)
    for args in (("search", "heron", "--collection", "notes"), ("index", "status", "--collection", "notes"),
                 ("ask", "--backend", "scratch", "--model", tiny_llama_dir, "--max-tokens", "2", "--docs", "notes",
                  "heron?")):
        message = one_line_error(hearth(*args, check=False))
        assert message.startswith("hearth: error: the collection database") and "hearth doctor" in message

    repaired = hearth("doctor", "--repair")
    assert "ingest its files again" in repaired.stdout
    assert len(list(folder.glob("collection.db.damaged-????????-??????"))) == 1
    hearth("ingest", docs, "--collection", "notes")
    assert "collection notes: ok (30 documents, 30 chunks" in hearth("doctor").stdout
