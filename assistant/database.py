"""How Hearth opens its SQLite files (the history database and each collection's) and writes to them.

Several Hearth processes may use one home at once (a chat, an `ask`, an ingest). Every write is a
`BEGIN IMMEDIATE` transaction: it takes the write lock before reading anything it will change, so a
process never decides on a stale read (two first uses creating the same table), and a held lock
is waited for up to LOCK_TIMEOUT_S. SQLite errors become one-line StorageErrors naming the file.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlite_utils

from assistant.errors import StorageError

LOCK_TIMEOUT_S = 30.0


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether the error is another process holding the lock (as opposed to a damaged file)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def problem(exc: sqlite3.Error, what: str, path: Path) -> StorageError:
    """The one-line error for an SQLite failure on `what` (e.g. "the history database")."""
    if is_busy(exc):
        return StorageError(f"{what} {path} is busy: another Hearth process held its lock for more than "
                            f"{LOCK_TIMEOUT_S:g} s. Try again when it has finished.")
    return StorageError(f"{what} {path} cannot be read ({exc}). `hearth doctor` checks it and "
                        "`hearth doctor --repair` rebuilds what can be rebuilt.")


def connect(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) an SQLite file in WAL mode with the lock timeout."""
    conn = sqlite3.connect(path, check_same_thread=False, timeout=LOCK_TIMEOUT_S)
    db = sqlite_utils.Database(conn)
    db.hearth_writer = threading.RLock()  # threads sharing the connection (the chat UI) write in turn
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:  # switching a new file to WAL needs it to itself, and that wait is not always retried
        try:
            db.enable_wal()
            return db
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.05)


@contextmanager
def write(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction holding the write lock from its first statement; rolled back on error.
    sqlite-utils' own writes inside it nest as savepoints."""
    with db.hearth_writer:
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        db.conn.execute("COMMIT")


@contextmanager
def reported(what: str, path: Path) -> Iterator[None]:
    """SQLite errors inside become the one-line StorageError for `what` at `path`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise problem(exc, what, path) from exc


def guarded(what: str):
    """Decorate the methods of a class with a `path`: SQLite errors become one-line StorageErrors."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            with reported(what, self.path):
                return method(self, *args, **kwargs)

        return wrapper

    return decorate
