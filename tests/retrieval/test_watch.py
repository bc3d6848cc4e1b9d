"""`hearth watch` as a real process: the collection follows edits, new files, renames and deletions
made while it runs, within a bounded time, FAISS and SQLite agreeing afterwards."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval.collection import Collection
from tests.helpers import hearth
from tests.retrieval.test_collection import _agree, _vectors_match

FOLLOW_WITHIN_S = 90  # generous: the watcher's first change also loads the embedder


def documents(home: Path) -> dict[str, str]:
    os.environ["HEARTH_HOME"] = str(home)
    c = Collection("w", create=False)
    try:
        return {Path(p).name: h for p, h in c.db.execute("select path, hash from documents")}
    finally:
        c.close()


def until(condition, what: str) -> None:
    deadline = time.monotonic() + FOLLOW_WITHIN_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"the watched collection did not follow: {what}")


@pytest.mark.slow
def test_watch_follows_the_folder_while_it_runs(tmp_path, hearth_home):
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(3):
        (notes / f"n{i}.txt").write_text(f"Note {i} about the water vole {i}.\n")
    hearth("ingest", notes, "--collection", "w")
    # As started from a terminal: a test run launched in the background (`make test &`, some CI
    # runners) ignores SIGINT, and a child would inherit that and never see the Ctrl+C below.
    watcher = subprocess.Popen([sys.executable, "-m", "assistant.cli", "watch", "w"],
                               env=os.environ | {"HEARTH_HOME": str(hearth_home)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(3)  # let it start watching
        (notes / "n0.txt").write_text("Note 0, edited: the vole swam away.\n")
        (notes / "new.txt").write_text("A new note about a grey wagtail.\n")
        os.rename(notes / "n1.txt", notes / "renamed.txt")
        (notes / "n2.txt").unlink()
        tmp = notes / ".n0.txt.swp"  # an editor's write-then-rename
        tmp.write_text("Note 0, saved by an editor.\n")
        os.replace(tmp, notes / "n0.txt")
        for i in range(300):  # a burst of events
            (notes / "burst.txt").write_text(f"burst {i}\n")
        until(lambda: set(documents(hearth_home)) == {"n0.txt", "new.txt", "renamed.txt", "burst.txt"},
              "names")
        until(lambda: hearth("search", "burst 299", "--collection", "w", "--mode", "keyword", "-k", "1").stdout
              .startswith("1."), "the burst's last write")
        until(lambda: "saved by an editor" in hearth("search", "saved by an editor", "--collection", "w",
                                                      "-k", "1").stdout, "the editor's save")
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            out, err = watcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # say what it printed, and do not hide an earlier failure
            watcher.kill()
            out, err = watcher.communicate()
            raise AssertionError(f"hearth watch did not stop on Ctrl+C within 60 s:\n{out}\n{err}") from None
    assert watcher.returncode == 0 and "Traceback" not in err, err
    assert "watching w" in err and " 1 renamed" in out  # re-pointed in one sync
    c = Collection("w", create=False)
    assert len(_agree(c)) == 4
    _vectors_match(c)
