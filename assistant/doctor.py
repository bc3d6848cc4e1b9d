"""`hearth doctor`: check HEARTH_HOME's databases and indexes, and repair what can be rebuilt.

What is derived is rebuilt from SQLite (the message search table, each collection's keyword table
and FAISS index). A database SQLite cannot read is never deleted: it is moved aside, a fresh one
takes its place, and for the history every row that can still be read is copied into the new one.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from assistant.config import history_db_path
from assistant.database import write

MAX_LISTED = 3  # integrity_check can list thousands of pages; the first few say enough


@dataclass
class Finding:
    """What the doctor found about one database (and did, with --repair)."""

    target: str  # "history" or "collection NAME"
    path: str
    summary: str = ""  # counts, when it could be read
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems or (not self.unrepaired and bool(self.repaired))

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def _integrity(path: Path) -> list[str]:
    """SQLite's own check of every page and index; [] when the file is sound."""
    try:
        conn = sqlite3.connect(path)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [f"SQLite cannot read it ({exc})"]
    bad = [r for r in rows if r != "ok"]
    return [f"damaged: {line}" for line in bad[:MAX_LISTED]] + (
        [f"damaged: ... {len(bad) - MAX_LISTED} more"] if len(bad) > MAX_LISTED else [])


def move_aside(path: Path) -> Path:
    """Rename a database and its WAL files to NAME.damaged-TIMESTAMP; returns the new path."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            shutil.move(part, target.with_name(target.name + suffix))
    return target


# -- the history database -----------------------------------------------------------------------
def check_history(repair: bool) -> Finding:
    from assistant.store import SCHEMA_VERSION, Store

    path = history_db_path()
    finding = Finding("history", str(path))
    if not path.exists():
        finding.summary = "not created yet"
        return finding
    finding.problems = _integrity(path)
    if finding.problems:
        if repair:
            aside = move_aside(path)
            store = Store(path)
            conversations, messages = salvage_history(aside, store)
            store.close()
            finding.repaired.append(f"moved the damaged file to {aside} and started a fresh database; "
                                    f"copied {conversations} conversations and {messages} messages that "
                                    "could still be read")
        return finding
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            finding.problems.append(f"written by a newer Hearth (schema {version}, this one reads "
                                    f"{SCHEMA_VERSION}): upgrade Hearth")
            finding.unrepaired.append("a newer schema is not downgraded")
            return finding
        if version < SCHEMA_VERSION:
            finding.problems.append(f"schema {version} of {SCHEMA_VERSION} (upgraded on next use)")
        elif not _fts_sound(conn, "messages_fts"):
            finding.problems.append("the message search table disagrees with the messages")
        finding.summary = _counts(conn, ("conversations", "messages"))
    finally:
        conn.close()
    if finding.problems and repair:
        store = Store(path)  # opening it migrates
        with write(store.db):
            store.db.execute("INSERT INTO messages_fts(messages_fts) VALUES('rebuild')")
        store.close()
        finding.repaired.append("upgraded the schema and rebuilt the message search table")
    return finding


def _fts_sound(conn: sqlite3.Connection, table: str) -> bool:
    try:
        conn.execute(f"INSERT INTO {table}({table}) VALUES('integrity-check')")
        return True
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.rollback()


def _counts(conn: sqlite3.Connection, tables: tuple[str, ...]) -> str:
    return ", ".join(f"{conn.execute(f'select count(*) from {t}').fetchone()[0]} {t}" for t in tables)


def salvage_history(damaged: Path, store) -> tuple[int, int]:
    """Copy every conversation and message row of a damaged history file that SQLite can still read
    into `store`, ids kept; returns how many of each."""
    try:
        src = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0, 0
    src.row_factory = sqlite3.Row
    copied = []
    for table in ("conversations", "messages"):
        columns = set(store.db[table].columns_dict)
        rows = [{k: row[k] for k in row.keys() if k in columns} for row in _readable_rows(src, table)]
        if table == "messages":  # a message whose conversation was lost cannot be shown anywhere
            kept = {r[0] for r in store.db.execute("select id from conversations")}
            rows = [r for r in rows if r.get("conversation_id") in kept]
        with write(store.db):
            store.db[table].insert_all(rows, pk="id", replace=True)
        copied.append(len(rows))
    src.close()
    if copied[1]:
        with write(store.db):
            store.db.execute("INSERT INTO messages_fts(messages_fts) VALUES('rebuild')")
    return copied[0], copied[1]


def _readable_rows(src: sqlite3.Connection, table: str) -> list[sqlite3.Row]:
    """All rows of a table; where a scan fails part-way, row by row so one bad page loses only its rows."""
    try:
        return src.execute(f"select * from {table}").fetchall()
    except sqlite3.DatabaseError:
        pass
    try:
        top = src.execute(f"select max(id) from {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        return []
    rows = []
    for rowid in range(1, top + 1):
        try:
            rows.extend(src.execute(f"select * from {table} where id = ?", [rowid]).fetchall())
        except sqlite3.DatabaseError:
            continue
    return rows


# -- document collections -----------------------------------------------------------------------
def check_collection(name: str, repair: bool) -> Finding:
    from retrieval.collection import INDEX_FILE, SCHEMA_VERSION, Collection, collections_dir

    folder = collections_dir() / name
    path = folder / "collection.db"
    finding = Finding(f"collection {name}", str(path))
    finding.problems = _integrity(path)
    if finding.problems:
        if repair:
            aside = move_aside(path)
            (folder / INDEX_FILE).unlink(missing_ok=True)  # derived from the database moved aside
            Collection(name).close()
            finding.repaired.append(f"moved the damaged file to {aside} and started an empty collection: "
                                    f"ingest its files again (`hearth ingest PATH --collection {name}`)")
        return finding
    conn = sqlite3.connect(path)
    try:
        meta = dict(conn.execute("select key, value from meta").fetchall())
        if meta.get("schema") != str(SCHEMA_VERSION):
            finding.problems.append(f"schema {meta.get('schema')}, this Hearth reads {SCHEMA_VERSION}")
            finding.unrepaired.append("an unknown schema is not rewritten")
            return finding
        generation = int(meta.get("generation", 0))
        chunk_ids = {r[0] for r in conn.execute("select id from chunks")}
        keyword_ids = {r[0] for r in conn.execute("select rowid from chunks_fts")}
        finding.summary = f"{_counts(conn, ('documents', 'chunks'))}, generation {generation}"
    finally:
        conn.close()
    keywords_bad = chunk_ids != keyword_ids
    if keywords_bad:
        finding.problems.append(f"the keyword table has {len(keyword_ids)} rows for {len(chunk_ids)} chunks")
    vectors_bad = _faiss_problem(folder / INDEX_FILE, generation, chunk_ids)
    if vectors_bad:
        finding.problems.append(f"the FAISS index {vectors_bad} (it is rebuilt on next use)")
    if finding.problems and repair:
        collection = Collection(name, create=False)
        if keywords_bad:
            n = collection.rebuild_keywords()
            finding.repaired.append(f"rebuilt the keyword table ({n} chunks)")
        if vectors_bad:
            collection.rebuild_index()
            finding.repaired.append(f"rebuilt the FAISS index from the stored embeddings ({len(chunk_ids)} vectors)")
        collection.close()
    return finding


def _faiss_problem(path: Path, generation: int, chunk_ids: set[int]) -> str | None:
    from retrieval.collection import read_index_file

    if not path.exists():
        return "is missing" if chunk_ids else None
    try:
        index, stamp = read_index_file(path)
    except (OSError, ValueError) as exc:
        return f"cannot be read ({exc})"
    if stamp != generation:
        return f"reflects generation {stamp}, the database is at {generation}"
    ids = {int(index.id_map.at(i)) for i in range(index.ntotal)}
    if ids != chunk_ids:
        return f"holds {len(ids)} vectors for {len(chunk_ids)} chunks"
    return None


def examine(repair: bool = False) -> list[Finding]:
    """Every database under HEARTH_HOME: the history, then each collection."""
    from retrieval.collection import list_collections

    return [check_history(repair)] + [check_collection(name, repair) for name in list_collections()]
