"""Several Hearth processes on one home at once: nothing fails, nothing is lost, a held lock is
waited for and then reported in one line."""

import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from assistant import database
from assistant.records import Conversation
from assistant.store import Store
from retrieval.collection import Collection
from tests.helpers import hearth


def start(*args, home):
    """`hearth ARGS` as its own process, the way a user starts it."""
    env = os.environ | {"HEARTH_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "assistant.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes) -> None:
    for p in processes:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{p.args} failed ({p.returncode}):\n{err}"
        assert "Traceback" not in err


def folder_of_notes(root, name, n):
    folder = root / name
    folder.mkdir()
    for i in range(n):
        (folder / f"{name}-{i}.txt").write_text(f"{name} note {i}: the otter in pool {i} found a shell.\n")
    return folder


@pytest.mark.slow
def test_first_use_by_several_processes_at_once_loses_nothing(tmp_path, tiny_llama_dir):
    home = tmp_path / "fresh-home"  # nothing exists yet: every process races to create the databases
    folders = [folder_of_notes(tmp_path, f"set{i}", 5) for i in range(3)]
    asks = [start("ask", "--backend", "scratch", "--model", tiny_llama_dir, "--max-tokens", "3", f"question {i}",
                  home=home) for i in range(3)]
    ingests = [start("ingest", folder, "--collection", "shared", home=home) for folder in folders]
    listing = start("history", "list", home=home)
    finish(asks + ingests + [listing])

    os.environ["HEARTH_HOME"] = str(home)
    store = Store()
    conversations = store.list_conversations()
    assert sorted(c.title for c in conversations) == ["question 0", "question 1", "question 2"]
    assert all([m.role for m in store.messages(c.id)] == ["user", "assistant"] for c in conversations)
    shared = Collection("shared", create=False)
    status = shared.status()
    assert (status["documents"], status["chunks"], status["consistent"]) == (15, 15, True)
    assert sorted(shared.roots) == sorted(str(f) for f in folders)  # each ingest remembered its root
    assert hearth("doctor", home=home).returncode == 0

    # a second ingest into it while searches read it
    more = folder_of_notes(tmp_path, "more", 20)
    ingest = start("ingest", more, "--collection", "shared", home=home)
    searches = [start("search", "otter shell", "--collection", "shared", "-k", "3", "--json", home=home)
                for _ in range(2)]
    finish([ingest] + searches)
    assert all(s.returncode == 0 for s in searches)
    status = Collection("shared", create=False).status()
    assert (status["documents"], status["consistent"]) == (35, True)


def conversation_under_a_held_lock(seconds: float) -> tuple[int, threading.Thread]:
    """A stored conversation's id, and a thread that holds the history database's write lock (as
    another process's long write would) for `seconds` from now."""
    store = Store()
    conv = store.create_conversation(Conversation(title="old", system_prompt=""))
    held = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(store.path)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.rollback()
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    return conv.id, holder


def test_a_held_history_lock_is_waited_for(hearth_home):
    conversation_id, holder = conversation_under_a_held_lock(1.5)
    hearth("history", "delete", conversation_id)  # waits for the writer, then deletes
    holder.join()
    assert Store().list_conversations() == []


def test_a_lock_held_past_the_timeout_is_one_line(hearth_home, monkeypatch):
    monkeypatch.setattr(database, "LOCK_TIMEOUT_S", 0.3)
    conversation_id, holder = conversation_under_a_held_lock(3)
    run = hearth("history", "delete", conversation_id, check=False)
    holder.join()
    assert run.returncode == 1 and run.stderr.count("\n") == 1
    assert run.stderr.startswith("hearth: error: the history database") and "is busy" in run.stderr
    assert "held its lock for more than 0.3 s" in run.stderr
    assert len(Store().list_conversations()) == 1  # nothing was half-deleted
