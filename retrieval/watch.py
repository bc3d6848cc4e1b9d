"""Keep collections current while running: file events (watchdog) only mark a collection dirty; once
its roots have been quiet for the debounce interval, one sync brings it up to date. Sync reads the
disk as it is then, so an editor's write-then-rename, a burst of thousands of events or an event
for a file that is already gone all come to the same thing: one pass of stat calls and the changed
files' embeddings. A sync is a series of committed transactions, so stopping the watcher (or
killing it) at any point leaves a consistent collection that the next sync completes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from assistant.config import hearth_home

DEBOUNCE_S = 1.0


class Stopped(Exception):
    """Raised inside a sync when the watcher is asked to stop (what it committed stays)."""


class Watcher:
    """Watches the roots of some collections and syncs each after its files settle.

    `progress(name, state)`, if given, sees each sync's progress (files_done, files_total, chunks);
    setting `stop` ends a sync in progress after its current file, not only between syncs."""

    def __init__(self, collections: list, on_sync: Callable[[str, object], None], debounce_s: float = DEBOUNCE_S,
                 progress: Callable[[str, dict], None] | None = None):
        self.collections = {c.name: c for c in collections}
        self.on_sync = on_sync
        self.progress = progress
        self.debounce_s = debounce_s
        self._last_event: dict[str, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()

    def _mark(self, name: str) -> None:
        with self._lock:
            self._last_event[name] = time.monotonic()
        self._changed.set()

    def _observer(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        home = str(hearth_home().resolve())
        observer = Observer()
        for name, collection in self.collections.items():
            for root in map(Path, collection.roots):
                # a file root is watched through its folder; a missing root's parent still sees it come back
                folder = root if root.is_dir() else root.parent
                if not folder.is_dir():
                    continue
                handler = FileSystemEventHandler()

                def on_any_event(event, name=name, folder=folder) -> None:
                    for path in filter(None, (event.src_path, getattr(event, "dest_path", ""))):
                        path = str(path)
                        if path.startswith(home):  # Hearth's own writes (a home inside a watched folder)
                            continue
                        inside = Path(path).relative_to(folder) if path.startswith(str(folder)) else Path(path)
                        if not any(part.startswith(".") for part in inside.parts):  # as ingest skips them
                            self._mark(name)

                handler.on_any_event = on_any_event
                observer.schedule(handler, str(folder), recursive=root.is_dir())
        return observer

    def run(self, stop: threading.Event) -> None:
        """Sync every collection once, then after each quiet spell, until `stop` is set."""
        for name in self.collections:
            self._mark(name)  # catch up with whatever changed while nothing was watching
        observer = self._observer()
        observer.start()
        try:
            while not stop.is_set():
                self._changed.wait(timeout=0.2)
                self._changed.clear()
                now = time.monotonic()
                with self._lock:
                    due = [n for n, t in self._last_event.items() if now - t >= self.debounce_s]
                    for name in due:
                        del self._last_event[name]
                for name in due:
                    self.on_sync(name, self.collections[name].sync(lambda state, name=name: self._step(name, state, stop)))
        except Stopped:
            pass
        finally:
            observer.stop()
            observer.join()

    def _step(self, name: str, state: dict, stop: threading.Event) -> None:
        if stop.is_set():
            raise Stopped
        if self.progress is not None:
            self.progress(name, state)
