"""Collections remember their roots; sync follows new, changed, renamed and deleted files, and an
unchanged file is only stat'ed."""

import os
from pathlib import Path

import pytest

from retrieval.collection import Collection
from retrieval.search import search
from tests.helpers import hearth
from tests.retrieval.test_collection import _agree, _vectors_match


@pytest.fixture
def notes(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    for i in range(4):
        (folder / f"n{i}.txt").write_text(f"Note {i}: the kingfisher number {i} dived for a minnow.\n")
    (folder / "sub" / "deep.md").write_text("# Deep\n\nThe newt sleeps under the stone.\n")
    return folder


def chunk_ids(c: Collection, path: Path) -> list[int]:
    return [r[0] for r in c.db.execute("select c.id from chunks c join documents d on d.id = c.doc_id "
                                       "where d.path = ? order by c.id", [str(path)])]


def test_sync_follows_renames_edits_deletions_and_new_files(notes, embedder):
    c = Collection("n", embedder=embedder)
    c.ingest([notes])
    assert c.roots == [str(notes)] and c.stale() == {"new": [], "changed": [], "deleted": []}
    before = chunk_ids(c, notes / "n0.txt")

    os.rename(notes / "n0.txt", notes / "sub" / "moved.txt")
    (notes / "n1.txt").write_text("Note 1: the kingfisher flew upstream at dusk.\n")
    (notes / "n2.txt").unlink()
    (notes / "fresh.txt").write_text("A heron stood in the shallows all morning.\n")
    stale = c.stale()
    assert {k: sorted(Path(p).name for p in v) for k, v in stale.items()} == {
        "new": ["fresh.txt", "moved.txt"], "changed": ["n1.txt"], "deleted": ["n0.txt", "n2.txt"]}

    r = c.sync()
    assert (r.added, r.updated, r.renamed, r.removed, r.unchanged) == (1, 1, 1, 1, 2)
    assert chunk_ids(c, notes / "sub" / "moved.txt") == before  # re-pointed, not re-embedded
    assert c.stale() == {"new": [], "changed": [], "deleted": []}
    assert len(_agree(c)) == 5
    _vectors_match(c)
    assert search(c, "heron in the shallows", k=1)[0].chunk.path == str(notes / "fresh.txt")
    assert search(c, "minnow kingfisher 0", k=1, mode="keyword")[0].chunk.path == str(notes / "sub" / "moved.txt")


def test_a_sync_with_no_change_reads_no_file(notes, embedder, monkeypatch):
    c = Collection("n", embedder=embedder)
    c.ingest([notes])
    os.utime(notes / "n3.txt", (1, 1))  # touched, content the same: read once, then restamped
    r = c.sync()
    assert (r.unchanged, r.updated) == (5, 0)

    def no_reading(self):
        raise AssertionError(f"read {self}")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    monkeypatch.setattr(Path, "read_text", no_reading)
    r = c.sync()
    assert (r.unchanged, r.added, r.updated, r.removed) == (5, 0, 0, 0)


def test_roots_accumulate_and_a_gone_root_drops_its_documents(notes, tmp_path, embedder):
    other = tmp_path / "other.md"
    other.write_text("# Other\n\nThe badger digs at night.\n")
    c = Collection("n", embedder=embedder)
    c.ingest([notes])
    c.ingest([other, notes])
    assert c.roots == [str(notes), str(other)]
    other.unlink()
    r = c.sync()
    assert r.removed == 1 and c.db["documents"].count == 5


def test_collections_and_sync_commands(notes, tmp_path):
    hearth("ingest", notes, "--collection", "garden")
    listed = hearth("collections", "list", "--json").stdout
    assert '"name": "garden"' in listed and f'"roots": ["{notes}"]' in listed
    (notes / "n3.txt").write_text("Note 3 changed: the kingfisher is gone.\n")
    shown = hearth("collections", "show", "garden").stdout
    assert f"changed: {notes / 'n3.txt'}" in shown and "stale files: 1 changed" in shown
    synced = hearth("sync", "--all").stdout
    assert "garden: 0 added, 1 updated, 4 unchanged, 0 renamed, 0 removed" in synced
    assert "stale files: none" in hearth("collections").stdout
    assert "name one collection, or pass --all" in hearth("sync", check=False).stderr
    hearth("collections", "remove", "garden")
    assert "no collections yet" in hearth("collections").stdout
    assert notes.joinpath("n0.txt").exists()  # the user's files are untouched


def test_index_status_files_says_what_happened_to_each_file(notes, embedder):
    c = Collection("n", embedder=embedder)
    (notes / "blob.dat").write_bytes(b"\x00\x01" * 50)
    c.ingest([notes])
    (notes / "n1.txt").write_text("Note 1 changed.\n")
    (notes / "n2.txt").unlink()
    (notes / "later.txt").write_text("Written after the ingest.\n")
    os.mkfifo(notes / "pipe")
    status = {Path(f["path"]).name: (f["status"], f["detail"]) for f in c.file_status()}
    assert status.pop("n0.txt")[0] == "indexed" and status.pop("deep.md")[0] == "indexed"
    assert status.pop("n3.txt")[1].startswith("1 chunks, ")
    assert status == {"blob.dat": ("skipped", "binary file (contains NUL bytes)"),
                      "n1.txt": ("stale", "changed"), "n2.txt": ("stale", "deleted"),
                      "later.txt": ("stale", "new"), "pipe": ("skipped", "not a regular file (a FIFO)")}
    listed = hearth("index", "status", "--collection", "n", "--files").stdout
    assert f"skipped  {notes / 'pipe'}  (not a regular file (a FIFO))" in listed


def test_eval_collection_scores_the_users_own_questions(notes, tmp_path):
    import json

    hearth("ingest", notes, "--collection", "garden")
    questions = notes / "questions.jsonl"  # kept next to the notes: "file" is relative to it
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"question": "Where does the newt sleep?", "file": "sub/deep.md"},
        {"question": "What did kingfisher number 2 dive for?", "file": "n2.txt", "text": "dived for a minnow"},
        {"question": "Where does the newt sleep?", "file": "n0.txt"},  # wrong on purpose: a miss
    ]))
    result = json.loads(hearth("eval", "collection", "garden", "--questions", questions, "--json").stdout)
    assert (result["questions"], result["hit@1"]) == (3, round(2 / 3, 4))
    assert [m["file"] for m in result["missed"]] == [str(notes / "n0.txt")]
    assert result["missed"][0]["top"] == str(notes / "sub" / "deep.md")
    bad = notes / "bad.jsonl"
    bad.write_text('{"question": "no file"}\n')
    assert "line 1: needs" in hearth("eval", "collection", "garden", "--questions", bad, check=False).stderr


def test_a_search_sees_what_another_connection_committed(notes, embedder):
    reader = Collection("n", embedder=embedder)
    reader.ingest([notes])
    assert search(reader, "heron in the shallows", k=1, mode="dense")[0].chunk.path != str(notes / "fresh.txt")
    (notes / "fresh.txt").write_text("A heron stood in the shallows all morning.\n")
    writer = Collection("n", embedder=embedder)  # another process's connection, e.g. `hearth watch`
    writer.sync()
    writer.close()
    [hit] = search(reader, "heron in the shallows", k=1, mode="dense")  # its FAISS index was older
    assert hit.chunk.path == str(notes / "fresh.txt")


def test_searches_during_a_sync_see_whole_commits(notes, embedder):
    """The chat's background sync: one thread syncs through its own Collection, another searches."""
    import threading

    for i in range(60):
        (notes / f"more{i}.txt").write_text(f"Extra note {i}: a dipper walked along the river bed {i}.\n")
    c = Collection("n", embedder=embedder)
    c.ingest([notes / "n0.txt"])
    failures: list[BaseException] = []

    def sync() -> None:
        writer = Collection("n", embedder=embedder)
        try:
            writer.ingest([notes], batch_chunks=8)  # the folder's other 64 files, committed in batches
        except BaseException as exc:  # noqa: BLE001  (reported by the assert below)
            failures.append(exc)
        finally:
            writer.close()

    worker = threading.Thread(target=sync)
    worker.start()
    seen = set()
    while worker.is_alive() or not seen:
        with c.reading():
            rows = c.db["chunks"].count
            assert c.index.ntotal == rows  # FAISS holds exactly the rows this read sees
            hits = search(c, "a dipper walked along the river", k=5, mode="dense")
            assert len(hits) == min(5, rows)  # no hit points at a chunk this read cannot see
        seen.add(rows)
    worker.join()
    assert not failures and len(seen) > 1  # it searched while the sync was part-way
    with c.reading():
        assert len(_agree(c)) == 65
