"""A named document collection: SQLite (documents, chunks, FTS5) plus a FAISS index that agree.

SQLite is the source of truth: each file's chunks, their embeddings and the FTS rows are written
in one transaction, and a `generation` counter goes up with every commit. The FAISS index is saved
(atomically) with the generation it reflects; if a crash left it behind the database, opening the
collection rebuilds it from the stored embeddings, without re-embedding anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from assistant.config import ensure_dir, hearth_home
from assistant.database import connect, guarded, reported, write
from assistant.errors import HearthError
from assistant.files import write_atomic
from retrieval.chunker import Chunk, chunk_document
from retrieval.embedder import Embedder, shared_embedder
from retrieval.keywords import index_text
from retrieval.loaders import MAX_FILE_BYTES, SkipFile, load, not_regular

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_INDEX_MAGIC = b"HEARTH-FAISS-1\n"
INDEX_FILE = "vectors.faiss"  # in the collection's folder, next to collection.db
WHAT = "the collection database"
_guarded = guarded(WHAT)
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def collections_dir() -> Path:
    return hearth_home() / "collections"


def list_collections() -> list[str]:
    """Names of the collections that exist."""
    root = collections_dir()
    return sorted(p.name for p in root.iterdir() if (p / "collection.db").is_file()) if root.is_dir() else []


@dataclass
class IngestReport:
    """What an ingest run did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    renamed: int = 0  # moved on disk with the same content: re-pointed, not re-embedded
    removed: int = 0
    chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0

    @property
    def changes(self) -> str:
        """What changed, in words ("2 added, 1 removed"); empty when nothing did."""
        counts = {"added": self.added, "updated": self.updated, "renamed": self.renamed, "removed": self.removed}
        return ", ".join(f"{n} {what}" for what, n in counts.items() if n)


@dataclass
class ChunkRecord:
    """A stored chunk with its document's path."""

    id: int
    path: str
    title: str
    heading: str
    text: str
    start: int
    end: int
    line_start: int
    line_end: int
    page: int | None


def resolved(path: Path) -> Path:
    """The absolute path with symlinks resolved; a symlink loop stays as it was given (made absolute)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # RuntimeError: "Symlink loop"
        return Path(os.path.abspath(path))


def printable(path: Path | str) -> str:
    """A path as text that can be printed and stored (undecodable bytes of its name shown as U+FFFD)."""
    return os.fsencode(path).decode("utf-8", "replace")


def _usable_name(path: Path, skipped: list[tuple[str, str]]) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        skipped.append((printable(path), "its name is not valid UTF-8 (rename the file)"))
        return False


def _dangling(path: Path) -> str:
    return "symlink loop" if resolved(path) == Path(os.path.abspath(path)) else "broken symlink"


def walk(paths: Iterable[Path], skipped: list[tuple[str, str]]) -> Iterator[Path]:
    """Files under the given paths, each once; symlinked folders are followed once (no loops)."""
    seen_dirs: set[tuple[int, int]] = set()
    for root in paths:
        root = Path(root)
        if not _usable_name(root, skipped):
            continue
        if not root.exists():
            skipped.append((str(root), _dangling(root) if root.is_symlink() else "does not exist"))
            continue
        if (why := not_regular(root)) is not None:
            skipped.append((str(root), why))
            continue
        if root.is_file():
            yield resolved(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=lambda e: skipped.append((e.filename, f"unreadable folder ({e.strerror})"))):
            try:
                st = os.stat(dirpath)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:  # a symlink loop or a second link to the same folder
                skipped.append((dirpath, "already visited (symlink loop)"))
                dirnames[:] = []
                continue
            seen_dirs.add(key)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if not _usable_name(path, skipped):
                    continue
                if path.is_symlink() and not path.exists():
                    skipped.append((str(path), _dangling(path)))
                    continue
                if (why := not_regular(path)) is not None:
                    skipped.append((str(path), why))
                    continue
                yield resolved(path)


def _same_stat(row: dict | None, st: os.stat_result) -> bool:
    """A stored document whose file has the size and modification time it had when indexed."""
    return row is not None and row["size"] == st.st_size and row["mtime"] == st.st_mtime


def read_index_file(path: Path):
    """(FAISS index, generation) from a saved index file; OSError or ValueError if it cannot be read."""
    import faiss

    data = Path(path).read_bytes()
    header = len(_INDEX_MAGIC) + 8
    if len(data) < header or not data.startswith(_INDEX_MAGIC):
        raise ValueError("not a Hearth index file")
    generation = int.from_bytes(data[len(_INDEX_MAGIC) : header], "little")
    try:
        return faiss.deserialize_index(np.frombuffer(data[header:], dtype=np.uint8)), generation
    except RuntimeError as exc:
        raise ValueError(f"damaged FAISS data ({str(exc).splitlines()[0]})") from None


class Collection:
    """Documents, chunks, FTS5 and FAISS for one collection name under HEARTH_HOME."""

    def __init__(self, name: str = "default", embedder: Embedder | None = None, create: bool = True,
                 root: Path | None = None):
        if not name or set(name) - _NAME_OK or not name.strip("."):  # "." and ".." are folders of their own
            raise HearthError(f"invalid collection name {name!r}: use letters, digits, '-', '_' and '.'.")
        self.name = name
        self.dir = (root or collections_dir()) / name
        if not (self.dir / "collection.db").is_file() and not create:
            known = ", ".join(list_collections()) or "none yet"
            raise HearthError(f"no collection named {name!r} (existing: {known}); create it with `hearth ingest PATH --collection {name}`.")
        ensure_dir(self.dir)
        self.path = self.dir / "collection.db"
        with reported(WHAT, self.path):
            self.db = connect(self.path)
            self._create_schema()
            recorded_embedder = self.meta("embedder")
        self.embedder = self._check_embedder(embedder, recorded_embedder)
        self._index = None
        self._index_generation = -1  # the generation the FAISS index in memory reflects
        self._reading = False  # inside reading()

    # -- schema and metadata ---------------------------------------------------------------------
    def _create_schema(self) -> None:
        if "meta" in self.db.table_names():
            return
        with write(self.db):
            if "meta" in self.db.table_names():  # another process created it while this one waited
                return
            self.db["meta"].create({"key": str, "value": str}, pk="key")
            self.db["documents"].create({"id": int, "path": str, "hash": str, "size": int, "mtime": float,
                                         "title": str, "kind": str, "n_chunks": int, "ingested_at": float}, pk="id")
            self.db["documents"].create_index(["path"], unique=True)
            self.db["chunks"].create({"id": int, "doc_id": int, "ord": int, "text": str, "start": int, "end": int,
                                      "line_start": int, "line_end": int, "page": int, "heading": str,
                                      "embedding": bytes}, pk="id", foreign_keys=[("doc_id", "documents", "id")])
            self.db["chunks"].create_index(["doc_id"])
            self.db.execute("CREATE VIRTUAL TABLE chunks_fts USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
            self.db["meta"].insert_all([{"key": "schema", "value": str(SCHEMA_VERSION)}, {"key": "generation", "value": "0"}])

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("select value from meta where key = ?", [key]).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self.db["meta"].upsert({"key": key, "value": value}, pk="key")

    def _check_embedder(self, embedder: Embedder | None, recorded: str | None) -> Embedder:
        if embedder is None:
            if recorded and recorded != "all-MiniLM-L6-v2":
                embedder = Embedder(recorded)
            else:
                embedder = shared_embedder()  # loaded once per process, whichever collections use it
        if recorded and recorded != embedder.name:
            raise HearthError(f"collection {self.name!r} was built with embedder {recorded}; it cannot mix in "
                              f"{embedder.name}. Use another collection or `hearth index rebuild`.")
        return embedder

    @property
    def generation(self) -> int:
        return int(self.meta("generation", "0"))

    # -- FAISS --------------------------------------------------------------------------------
    @property
    def index(self):
        """The FAISS IndexIDMap2 over chunk ids, rebuilt from SQLite if it is missing or stale."""
        if self._index is None:
            self._index, self._index_generation = self._load_or_rebuild_index()
        return self._index

    @property
    def index_path(self) -> Path:
        """One file: the generation the index reflects, then the FAISS index (replaced atomically as a
        pair, so concurrent savers can never leave one process's vectors under another's stamp)."""
        return self.dir / INDEX_FILE

    def saved_index(self):
        """(index, generation) from the saved file, or None if it is missing or unreadable."""
        try:
            return read_index_file(self.index_path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("FAISS index unreadable (%s); rebuilding", exc)
            return None

    def _load_or_rebuild_index(self):
        saved = self.saved_index()
        if saved is not None:
            index, generation = saved
            if generation == self.generation and index.ntotal == self.db["chunks"].count:
                return index, generation
        return self._rebuild()

    @_guarded
    def rebuild_index(self):
        """Build the FAISS index from the embeddings stored in SQLite, and save it."""
        self._index, self._index_generation = self._rebuild()
        return self._index

    def _rebuild(self):
        import faiss

        with write(self.db):  # the rows and the generation read together, with no commit in between
            generation = self.generation
            dim = int(self.meta("dim", "0") or 0) or self.embedder.dim
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            batch_ids, batch_vecs = [], []
            for row in self.db.execute("select id, embedding from chunks order by id"):
                batch_ids.append(row[0])
                batch_vecs.append(np.frombuffer(row[1], dtype=np.float32))
                if len(batch_ids) >= 50_000:
                    index.add_with_ids(np.stack(batch_vecs), np.array(batch_ids, dtype=np.int64))
                    batch_ids, batch_vecs = [], []
            if batch_ids:
                index.add_with_ids(np.stack(batch_vecs), np.array(batch_ids, dtype=np.int64))
        self._save(index, generation)
        return index, generation

    def save_index(self) -> None:
        """Save the FAISS index in memory with the generation it reflects."""
        if self._index is not None:
            self._save(self._index, self._index_generation)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A consistent view for one search: the SQLite rows and a FAISS index of the same generation.

        A read transaction: what another connection (another process, or the chat's background
        sync, which opens its own) commits after it began is not seen, and every commit holds whole
        documents. An index older than the rows is reloaded from the saved file, or rebuilt from
        SQLite, first. A Collection object is used by one thread at a time (the lock is for nesting
        and safety, not for sharing one connection between a writer and readers)."""
        with self.db.hearth_writer:
            if self._reading:  # nested in a read already begun
                yield
                return
            with reported(WHAT, self.path):
                self._begin_reading()
            self._reading = True
            try:
                yield
            finally:
                self._reading = False
                with reported(WHAT, self.path):
                    self.db.conn.execute("COMMIT")

    def _begin_reading(self) -> None:
        for _attempt in range(5):  # a writer in another process may commit between the load and BEGIN
            if self._index is not None and self._index_generation != self.generation:
                self._index = None
            self.index  # noqa: B018
            self.db.conn.execute("BEGIN")
            if self.generation == self._index_generation:
                return
            self.db.conn.execute("COMMIT")
        self.db.conn.execute("BEGIN")  # still racing a busy writer: its latest rows; dense search may lag a commit

    def _save(self, index, generation: int) -> None:
        import faiss

        write_atomic(self.index_path, _INDEX_MAGIC + generation.to_bytes(8, "little")
                     + faiss.serialize_index(index).tobytes())
        for old in ("index.faiss", "index.json"):  # the two-file layout of earlier versions
            (self.dir / old).unlink(missing_ok=True)

    @_guarded
    def rebuild_keywords(self) -> int:
        """Rewrite the keyword (FTS5) rows from the chunks table; returns how many chunks it indexed."""
        with write(self.db):
            self.db.execute("delete from chunks_fts")
            rows = self.db.execute("select c.id, d.title, c.heading, c.text from chunks c "
                                   "join documents d on d.id = c.doc_id")
            n = 0
            for chunk_id, title, heading, text in rows.fetchall():
                self.db.execute("insert into chunks_fts(rowid, body) values (?, ?)",
                                [chunk_id, index_text(f"{title}\n{heading}\n{text}")])
                n += 1
        return n  # the generation stays: chunks and vectors did not change, so the FAISS index holds

    def _applied(self, generation_before: int):
        """The in-memory index to mirror a commit onto, or None if another process committed since it
        was loaded (it is then dropped and rebuilt from SQLite on next use)."""
        if generation_before != self._index_generation:
            self._index = None
            return None
        self._index_generation = generation_before + 1
        return self._index

    # -- writes ---------------------------------------------------------------------------------
    def _doc_row(self, path: str) -> dict | None:
        rows = list(self.db["documents"].rows_where("path = ?", [path]))
        return rows[0] if rows else None

    def _commit_document(self, path: str, digest: str, size: int, mtime: float, title: str, kind: str,
                         chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Replace a document's chunks in one transaction, then mirror the change in FAISS."""
        if self.meta("dim") is None:
            with write(self.db):
                self._set_meta("dim", str(vectors.shape[1]))
                self._set_meta("embedder", self.embedder.name)
        self.index  # noqa: B018  (loaded or rebuilt before this change, so it is applied exactly once)
        old_ids: list[int] = []
        with write(self.db):
            index = self._applied(self.generation)
            doc = self._doc_row(path)
            if doc is not None:
                old_ids = [r[0] for r in self.db.execute("select id from chunks where doc_id = ?", [doc["id"]])]
                self._delete_chunks(old_ids)
                doc_id = doc["id"]
                self.db["documents"].update(doc_id, {"hash": digest, "size": size, "mtime": mtime, "title": title,
                                                     "kind": kind, "n_chunks": len(chunks), "ingested_at": time.time()})
            else:
                doc_id = self.db["documents"].insert({"path": path, "hash": digest, "size": size, "mtime": mtime,
                                                      "title": title, "kind": kind, "n_chunks": len(chunks),
                                                      "ingested_at": time.time()}).last_pk
            new_ids = []
            conn = self.db.conn
            for order, (chunk, vector) in enumerate(zip(chunks, vectors)):
                cid = conn.execute(
                    "insert into chunks (doc_id, ord, text, start, [end], line_start, line_end, page, heading, "
                    "embedding) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [doc_id, order, chunk.text, chunk.start, chunk.end, chunk.line_start, chunk.line_end,
                     chunk.page, chunk.heading, vector.astype(np.float32).tobytes()],
                ).lastrowid
                conn.execute("insert into chunks_fts(rowid, body) values (?, ?)",
                             [cid, index_text(f"{title}\n{chunk.heading}\n{chunk.text}")])
                new_ids.append(cid)
            self._bump_generation()
        if index is None:
            return
        if old_ids:
            index.remove_ids(np.array(old_ids, dtype=np.int64))
        if new_ids:
            index.add_with_ids(vectors.astype(np.float32), np.array(new_ids, dtype=np.int64))

    def _delete_chunks(self, ids: list[int]) -> None:
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            self.db.execute(f"delete from chunks where id in ({marks})", part)
            self.db.execute(f"delete from chunks_fts where rowid in ({marks})", part)

    def _bump_generation(self) -> None:
        self._set_meta("generation", str(self.generation + 1))

    def _documents_under(self, root: Path) -> list[dict]:
        """Stored documents at a file root, or anywhere under a folder root."""
        prefix = str(root).rstrip(os.sep) + os.sep
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"  # _ and % are text
        return list(self.db.query("select path, hash, size, mtime, title from documents "
                                  "where path = ? or path like ? escape '\\'", [str(root), like]))

    def _restamp(self, path: str, st: os.stat_result) -> None:
        with write(self.db):
            self.db.execute("update documents set size = ?, mtime = ? where path = ?", [st.st_size, st.st_mtime, path])

    def _move_document(self, old: str, new: str, st: os.stat_result) -> None:
        """Point a document at its new path; a title that was its file name follows the name."""
        with write(self.db):
            doc = self._doc_row(old)
            title = Path(new).stem if doc["title"] == Path(old).stem else doc["title"]
            self.db.execute("update documents set path = ?, title = ?, size = ?, mtime = ? where path = ?",
                            [new, title, st.st_size, st.st_mtime, old])

    # -- roots ----------------------------------------------------------------------------------
    @property
    def roots(self) -> list[str]:
        """The paths this collection was built from (every path ever given to ingest that existed)."""
        return json.loads(self.meta("roots") or "[]")

    @property
    def options(self) -> dict:
        """The ingest options last used (max_bytes, target_tokens), which sync reuses."""
        return json.loads(self.meta("options") or "{}")

    def _remember(self, roots: list[Path], max_bytes: int, target_tokens: int | None) -> None:
        with write(self.db):  # read and written under the lock: concurrent ingests each add their roots
            known = json.loads(self.meta("roots") or "[]")
            new = [str(r) for r in roots if r.exists() and str(r) not in known]
            self._set_meta("roots", json.dumps(known + new))
            self._set_meta("options", json.dumps({"max_bytes": max_bytes, "target_tokens": target_tokens}))

    @_guarded
    def sync(self, progress: Callable[[dict], None] | None = None) -> IngestReport:
        """Bring the collection up to date with its roots: new, changed, renamed and deleted files."""
        options = self.options
        return self.ingest([Path(r) for r in self.roots], max_bytes=options.get("max_bytes", MAX_FILE_BYTES),
                           progress=progress, target_tokens=options.get("target_tokens"))

    @_guarded
    def stale(self) -> dict[str, list[str]]:
        """Files under the roots that changed since they were indexed: new, changed and deleted."""
        found: dict[str, list[str]] = {"new": [], "changed": [], "deleted": []}
        seen = set()
        for file in walk([Path(r) for r in self.roots], []):
            key = str(file)
            seen.add(key)
            row = self._doc_row(key)
            try:
                st = file.stat()
            except OSError:
                continue
            if row is None:
                found["new"].append(key)  # (or a file ingest skips: `index status --files` says which)
            elif not _same_stat(row, st):
                found["changed"].append(key)
        for root in self.roots:
            for row in self._documents_under(Path(root)):
                if row["path"] not in seen and not Path(row["path"]).exists():
                    found["deleted"].append(row["path"])
        return found

    @_guarded
    def file_status(self) -> list[dict]:
        """Every file under the roots: indexed (chunks, when), skipped (why) or stale (new, changed or
        deleted since indexed). A file never indexed is loaded to learn why, without embedding it."""
        max_bytes = self.options.get("max_bytes", MAX_FILE_BYTES)
        skipped: list[tuple[str, str]] = []
        rows, seen = [], set()
        for file in walk([Path(r) for r in self.roots], skipped):
            key = str(file)
            seen.add(key)
            doc = self._doc_row(key)
            try:
                st = file.stat()
            except OSError as exc:
                skipped.append((key, f"unreadable ({exc.strerror})"))
                continue
            if doc is not None:
                when = datetime.fromtimestamp(doc["ingested_at"]).isoformat(timespec="seconds")
                rows.append({"path": key, "status": "indexed" if _same_stat(doc, st) else "stale",
                             "detail": f"{doc['n_chunks']} chunks, {when}" if _same_stat(doc, st) else "changed"})
                continue
            try:
                load(file, max_bytes)
                rows.append({"path": key, "status": "stale", "detail": "new"})
            except SkipFile as exc:
                rows.append({"path": key, "status": "skipped", "detail": str(exc)})
        rows += [{"path": path, "status": "skipped", "detail": why} for path, why in dict.fromkeys(skipped)]
        for root in self.roots:
            rows += [{"path": row["path"], "status": "stale", "detail": "deleted"}
                     for row in self._documents_under(Path(root))
                     if row["path"] not in seen and not Path(row["path"]).exists()]
        return sorted(rows, key=lambda r: r["path"])

    @_guarded
    def remove_document(self, path: str) -> bool:
        """Remove a document and its chunks from SQLite and FAISS; False if it was not there."""
        self.index  # noqa: B018
        with write(self.db):
            doc = self._doc_row(path)
            if doc is None:
                return False
            index = self._applied(self.generation)
            ids = [r[0] for r in self.db.execute("select id from chunks where doc_id = ?", [doc["id"]])]
            self._delete_chunks(ids)
            self.db["documents"].delete(doc["id"])
            self._bump_generation()
        if ids and index is not None:
            index.remove_ids(np.array(ids, dtype=np.int64))
        return True

    @_guarded
    def remove_path(self, path: Path) -> int:
        """Remove a file, or every document under a folder; returns how many were removed."""
        removed = sum(self.remove_document(row["path"]) for row in self._documents_under(resolved(path)))
        self.save_index()
        return removed

    @_guarded
    def ingest(self, paths: Iterable[Path], max_bytes: int = MAX_FILE_BYTES, batch_chunks: int = 512,
               progress: Callable[[dict], None] | None = None, target_tokens: int | None = None) -> IngestReport:
        """Add new files, re-chunk changed ones, drop deleted ones; skip what cannot be read."""
        report = IngestReport()
        started = time.perf_counter()
        roots = [resolved(p) for p in paths]
        self._remember(roots, max_bytes, target_tokens)
        files = list(dict.fromkeys(walk(roots, report.skipped)))  # a file named twice is read once
        seen = {str(f) for f in files}
        # content hash -> path of documents under these roots that are gone from disk: a new file with
        # the same content is the same document renamed
        gone = {row["hash"]: row["path"] for root in roots for row in self._documents_under(root)
                if row["path"] not in seen and not Path(row["path"]).exists()}
        pending: list[tuple] = []  # (path, digest, size, mtime, title, kind, chunks, is_update)
        pending_chunks = 0
        chunk_kwargs = {"target_tokens": target_tokens} if target_tokens else {}
        last_save = time.monotonic()

        # Embedding runs in a worker thread (torch releases the GIL) while this thread reads,
        # chunks and commits the neighbouring batches.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        in_flight: tuple | None = None  # (future vectors, the batch they belong to)

        def commit(batch_future, batch) -> None:
            nonlocal last_save
            vectors = batch_future.result()
            pos = 0
            for path, digest, size, mtime, title, kind, chunks, is_update in batch:
                self._commit_document(path, digest, size, mtime, title, kind, chunks, vectors[pos : pos + len(chunks)])
                pos += len(chunks)
                report.chunks += len(chunks)
                if is_update:
                    report.updated += 1
                else:
                    report.added += 1
            if time.monotonic() - last_save > 30:  # a stale file is rebuilt on open, so this is only a shortcut
                self.save_index()
                last_save = time.monotonic()

        def flush() -> None:
            nonlocal pending, pending_chunks, in_flight
            if pending:
                texts = [c.embed_text for item in pending for c in item[6]]
                submitted = (executor.submit(self.embedder.encode, texts), pending)
            else:
                submitted = None
            if in_flight is not None:
                commit(*in_flight)
            in_flight = submitted
            pending, pending_chunks = [], 0

        try:
            for n, file in enumerate(files, 1):
                key = str(file)
                existing = self._doc_row(key)
                try:
                    data_stat = file.stat()
                    if _same_stat(existing, data_stat):  # unchanged files are not read at all
                        report.unchanged += 1
                        continue
                    if data_stat.st_size > max_bytes:
                        raise SkipFile(f"larger than the {max_bytes // (1024 * 1024)} MiB limit")
                    digest = hashlib.sha256(file.read_bytes()).hexdigest()
                except SkipFile as exc:
                    report.skipped.append((key, str(exc)))
                    continue
                except OSError as exc:
                    report.skipped.append((key, f"unreadable ({exc.strerror})"))
                    continue
                if existing is not None and existing["hash"] == digest:
                    self._restamp(key, data_stat)  # touched, not changed
                    report.unchanged += 1
                elif existing is None and digest in gone:
                    self._move_document(gone.pop(digest), key, data_stat)
                    report.renamed += 1
                else:
                    try:
                        doc = load(file, max_bytes)
                    except SkipFile as exc:
                        report.skipped.append((key, str(exc)))
                        if existing is not None:  # it was text before and is not now: drop the stale chunks
                            self.remove_document(key)
                        continue
                    chunks = chunk_document(doc, self.embedder.count_tokens, **chunk_kwargs)
                    pending.append((key, digest, data_stat.st_size, data_stat.st_mtime, doc.title, doc.kind, chunks,
                                    existing is not None))
                    pending_chunks += len(chunks)
                    if pending_chunks >= batch_chunks:
                        flush()
                if progress:
                    progress({"files_done": n, "files_total": len(files), "chunks": report.chunks + pending_chunks})
            flush()
            flush()  # commits the last batch in flight
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        # Documents that were under the ingested folders but are gone from disk.
        for root in roots:
            if root.is_dir() or not root.exists():
                for row in self._documents_under(root):
                    if row["path"] not in seen and not Path(row["path"]).exists():
                        report.removed += self.remove_document(row["path"])
        self.save_index()
        with write(self.db):
            self._set_meta("synced_at", str(time.time()))
        report.skipped = list(dict.fromkeys(report.skipped))  # a path given twice is reported once
        report.seconds = time.perf_counter() - started
        return report

    # -- reads ----------------------------------------------------------------------------------
    @_guarded
    def chunks_by_id(self, ids: list[int]) -> dict[int, ChunkRecord]:
        """Chunk records for the ids (missing ids are left out)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        sql = (f"select c.id, d.path, d.title, c.heading, c.text, c.start, c.end, c.line_start, c.line_end, c.page "
               f"from chunks c join documents d on d.id = c.doc_id where c.id in ({marks})")
        return {row[0]: ChunkRecord(*row) for row in self.db.execute(sql, list(ids))}

    @_guarded
    def status(self) -> dict:
        """Counts and consistency of the collection."""
        n_chunks = self.db["chunks"].count
        return {
            "collection": self.name,
            "path": str(self.dir),
            "embedder": self.meta("embedder") or self.embedder.name,
            "documents": self.db["documents"].count,
            "chunks": n_chunks,
            "faiss_vectors": int(self.index.ntotal),
            "fts_rows": self.db.execute("select count(*) from chunks_fts").fetchone()[0],
            "generation": self.generation,
            "consistent": int(self.index.ntotal) == n_chunks,
        }

    def close(self) -> None:
        self.db.close()
