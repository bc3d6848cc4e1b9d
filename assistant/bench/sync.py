"""`hearth bench sync`: what keeping a collection current costs, against ingesting it again.

N small text files are ingested into a collection in a temporary folder (the full ingest), then
synced three ways in the same run: with nothing changed (stat calls only), with one file edited
(that file re-embedded), and with one file renamed (re-pointed, not re-embedded).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

WORDS = ("otter heron badger kingfisher newt river pond reed stone meadow dawn dusk minnow shell "
         "willow alder frost rain lantern ledger mill market bread orchard").split()


def run(n_files: int = 2000, report: Callable[[str], None] = print) -> dict:
    from retrieval.collection import Collection
    from retrieval.embedder import shared_embedder

    rng = random.Random(0)
    embedder = shared_embedder()
    embedder.encode(["warm up"])  # loading the model is not part of any timing
    with tempfile.TemporaryDirectory(prefix="hearth-bench-sync-") as tmp:
        docs = Path(tmp) / "docs"
        for i in range(n_files):
            folder = docs / f"folder{i % 20}"
            folder.mkdir(parents=True, exist_ok=True)
            text = " ".join(rng.choice(WORDS) for _ in range(60))
            (folder / f"note{i}.txt").write_text(f"Note {i}. {text}.\n")
        collection = Collection("bench", embedder=embedder, root=Path(tmp) / "collections")

        def timed(action) -> tuple[float, object]:
            start = time.perf_counter()
            result = action()
            return time.perf_counter() - start, result

        full_s, _ = timed(lambda: collection.ingest([docs]))
        report(f"full ingest of {n_files} files: {full_s:.1f} s")
        nochange_s, r = timed(collection.sync)
        _expect(r.unchanged == n_files, r)
        report(f"sync with nothing changed: {nochange_s:.2f} s")
        edited = docs / "folder3" / "note3.txt"
        edited.write_text(edited.read_text() + "An edit about a lantern.\n")
        one_s, r = timed(collection.sync)
        _expect(r.updated == 1, r)
        report(f"sync after one edit: {one_s:.2f} s")
        os.rename(docs / "folder4" / "note4.txt", docs / "folder5" / "renamed.txt")
        rename_s, r = timed(collection.sync)
        _expect(r.renamed == 1, r)
        report(f"sync after one rename: {rename_s:.2f} s")
        collection.close()
    return {"files": n_files, "full_ingest_s": round(full_s, 2), "sync_nochange_s": round(nochange_s, 3),
            "sync_one_edit_s": round(one_s, 3), "sync_one_rename_s": round(rename_s, 3),
            "full_over_nochange": round(full_s / nochange_s, 1)}


def _expect(ok: bool, report) -> None:
    """The bench times what it names only if each sync did what it should."""
    if not ok:
        raise RuntimeError(f"sync did not do what the bench measures: {report}")
