import os

import numpy as np
import pytest

from assistant.errors import HearthError
from retrieval.collection import Collection
from retrieval.search import search


def _agree(c: Collection) -> set[int]:
    """FAISS, the chunk table and the FTS table hold the same ids; return them."""
    sql_ids = {r[0] for r in c.db.execute("select id from chunks")}
    fts_ids = {r[0] for r in c.db.execute("select rowid from chunks_fts")}
    faiss_ids = {int(c.index.id_map.at(i)) for i in range(c.index.ntotal)}
    assert sql_ids == fts_ids == faiss_ids
    return sql_ids


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "garden.md").write_text("# Garden\n\nTomatoes need six hours of sun.\n")
    (folder / "cat.txt").write_text("Our cat Miso was born in March 2019.\n")
    sub = folder / "sub"
    sub.mkdir()
    (sub / "hearth.rst").write_text("Hearth\n======\n\nHearth stores chats in hearth.db.\n")
    return folder


def test_ingest_reingest_change_and_delete(docs, embedder):
    c = Collection("t", embedder=embedder)
    r = c.ingest([docs])
    assert (r.added, r.updated, r.unchanged, r.removed, r.chunks) == (3, 0, 0, 0, 3)
    first = _agree(c)

    r = c.ingest([docs])
    assert (r.added, r.updated, r.unchanged, r.chunks) == (0, 0, 3, 0)
    assert _agree(c) == first

    (docs / "cat.txt").write_text("Our cat Miso was born in April 2020 and likes tuna.\n")
    (docs / "sub" / "hearth.rst").unlink()
    r = c.ingest([docs])
    assert (r.added, r.updated, r.unchanged, r.removed) == (0, 1, 1, 1)
    ids = _agree(c)
    assert len(ids) == 2 and c.db["documents"].count == 2
    hits = search(c, "When was Miso born?", k=1)
    assert "April 2020" in hits[0].chunk.text

    assert c.remove_path(docs / "garden.md") == 1
    assert len(_agree(c)) == 1


def test_status_and_reopen_uses_saved_index(docs, embedder):
    c = Collection("t", embedder=embedder)
    c.ingest([docs])
    status = c.status()
    assert status["documents"] == 3 and status["chunks"] == status["faiss_vectors"] == status["fts_rows"] == 3
    assert status["consistent"] and status["embedder"] == "all-MiniLM-L6-v2"
    c.close()
    again = Collection("t", embedder=embedder, create=False)
    assert again.index.ntotal == 3
    assert again.saved_index()[1] == again.generation


def test_crash_mid_ingest_leaves_a_consistent_collection_and_rerun_completes(docs, embedder, monkeypatch):
    for i in range(6):
        (docs / f"extra{i}.txt").write_text(f"Extra document number {i} about topic {i}.\n")
    c = Collection("crash", embedder=embedder)
    real_commit = Collection._commit_document
    calls = {"n": 0}

    def dying_commit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed in the middle of the run
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "_commit_document", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        c.ingest([docs], batch_chunks=1)
    c.close()
    monkeypatch.setattr(Collection, "_commit_document", real_commit)

    reopened = Collection("crash", embedder=embedder)
    assert len(_agree(reopened)) == 3  # the three committed files, FAISS rebuilt to match
    r = reopened.ingest([docs])
    assert (r.unchanged, r.added) == (3, 6)
    assert len(_agree(reopened)) == 9


def _vectors_match(c: Collection) -> None:
    """Every chunk's vector in FAISS is the embedding stored with it in SQLite."""
    for chunk_id, blob in c.db.execute("select id, embedding from chunks"):
        assert np.array_equal(c.index.reconstruct(chunk_id), np.frombuffer(blob, dtype=np.float32)), chunk_id


def test_stale_faiss_file_is_rebuilt_from_sqlite(docs, embedder):
    c = Collection("stale", embedder=embedder)
    c.ingest([docs])
    old = c.index_path.read_bytes()
    (docs / "cat.txt").write_text("Our cat Miso was born in April 2020 and likes tuna.\n")
    c.ingest([docs])
    c.index_path.write_bytes(old)  # an index saved before the last commit, with its true stamp
    c.close()
    again = Collection("stale", embedder=embedder)
    assert again.saved_index()[1] < again.generation
    assert again.index.ntotal == 3 and _agree(again)
    _vectors_match(again)
    assert again.saved_index()[1] == again.generation  # the rebuilt index was saved


def test_concurrent_writers_never_save_an_index_under_a_stamp_it_does_not_reflect(docs, embedder):
    a = Collection("two", embedder=embedder)
    a.ingest([docs])
    b = Collection("two", embedder=embedder)
    b.index  # noqa: B018  (both processes hold the index in memory)
    (docs / "cat.txt").write_text("Our cat Miso was born in April 2020 and likes tuna.\n")
    b.ingest([docs / "cat.txt"])  # re-embeds a chunk that `a` holds the old vector of
    (docs / "new.txt").write_text("A new note about the pond and its frogs.\n")
    a.ingest([docs / "new.txt"])  # commits after b, from an index that missed b's change
    a.close()
    b.close()
    fresh = Collection("two", embedder=embedder)
    assert fresh.status()["consistent"] and len(_agree(fresh)) == 4
    _vectors_match(fresh)
    hits = search(fresh, "When was Miso born?", k=1)
    assert "April 2020" in hits[0].chunk.text


def test_symlink_loop_and_broken_link_are_skipped(docs, embedder):
    os.symlink(docs, docs / "sub" / "loop")
    os.symlink(docs / "missing.txt", docs / "dangling.txt")
    c = Collection("links", embedder=embedder)
    r = c.ingest([docs])
    assert r.added == 3
    reasons = dict(r.skipped)
    assert any("symlink loop" in why for why in reasons.values())
    assert reasons[str(docs / "dangling.txt")] == "broken symlink"


def test_binary_and_invalid_files_do_not_stop_ingest(docs, embedder):
    (docs / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    (docs / "empty.txt").write_text("")
    c = Collection("mixed", embedder=embedder)
    r = c.ingest([docs])
    assert r.added == 3 and {why for _, why in r.skipped} == {"binary file (contains NUL bytes)", "empty file"}


def test_embedder_mismatch_is_refused(docs, embedder, tmp_path):
    c = Collection("m", embedder=embedder)
    c.ingest([docs])
    c._set_meta("embedder", "some-other-model")
    c.db.conn.commit()
    with pytest.raises(HearthError, match="cannot mix"):
        Collection("m", embedder=embedder)


def test_unknown_collection_and_bad_name(embedder):
    with pytest.raises(HearthError, match="no collection named 'nope'"):
        Collection("nope", create=False)
    with pytest.raises(HearthError, match="invalid collection name"):
        Collection("../evil")


def test_bad_names_and_symlink_loops_are_skipped_and_the_rest_is_ingested(tmp_path, embedder):
    import json
    import os

    from tests.helpers import hearth

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.txt").write_text("Sourdough needs a lively starter and a long, cool rise.\n")
    fd = os.open(os.fsencode(folder) + b"/bad\xffname.txt", os.O_CREAT | os.O_WRONLY)  # a Latin-1 name
    os.write(fd, b"Rye bread is dense.\n")
    os.close(fd)
    (tmp_path / "A").symlink_to(tmp_path / "B")
    (tmp_path / "B").symlink_to(tmp_path / "A")
    (tmp_path / "single.txt").write_text("Focaccia is an olive oil bread.\n")
    run = hearth("ingest", tmp_path / "A", folder, tmp_path / "single.txt", "--collection", "c", "--json")
    assert json.loads(run.stdout)["added"] == 2 and "Traceback" not in run.stderr
    problems = run.stderr.strip().splitlines()
    assert [line.split(": ")[-1] for line in problems] == ["symlink loop",
                                                           "its name is not valid UTF-8 (rename the file)"]
    removed = hearth("index", "remove", tmp_path / "A", "--collection", "c")
    assert "removed 0 document(s)" in removed.stderr
