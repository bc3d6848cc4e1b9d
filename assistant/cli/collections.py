"""hearth collections list | show | remove, and hearth sync: collections and the folders they come from."""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime

from assistant.cli.output import emit, say
from assistant.errors import HearthError


def register(sub) -> None:
    p = sub.add_parser("collections", help="list, show or remove document collections")
    cs = p.add_subparsers(dest="action", metavar="ACTION")
    q = cs.add_parser("list", help="every collection with its roots, size and stale files (the default)")
    q.add_argument("--json", action="store_true", help="print a JSON list")
    q = cs.add_parser("show", help="one collection, with the stale files by name")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = cs.add_parser("remove", help="delete a collection's index (your files are not touched)")
    q.add_argument("name")
    p.set_defaults(func=cmd_collections, action="list", json=False)

    p = sub.add_parser("sync", help="bring collections up to date with the files and folders they were built from",
                       description="Re-reads each collection's roots (the paths given to `hearth ingest`): new "
                       "and changed files are indexed, deleted ones dropped, renamed ones re-pointed without "
                       "re-embedding. Unchanged files are only stat'ed, not read.")
    _add_targets(p, "sync", "print one JSON summary per collection")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("watch", help="keep collections current while it runs (Ctrl+C stops)",
                       description="Syncs the collections once, then again each time their roots have been "
                       "quiet for a second after a change (file events are debounced and batched). One line "
                       "per sync that changed something.")
    _add_targets(p, "watch", "print one JSON summary per sync that changed something")
    p.set_defaults(func=cmd_watch)


def _add_targets(p, verb: str, json_help: str) -> None:
    """NAME | --all and --json, as sync and watch take them (read back by _with_roots)."""
    p.add_argument("name", nargs="?", help="the collection (or --all)")
    p.add_argument("--all", action="store_true", help=f"{verb} every collection")
    p.add_argument("--json", action="store_true", help=json_help)


def describe(collection, stale_names: bool) -> dict:
    """What `collections list/show` print for one collection."""
    stale = collection.stale()
    synced = collection.meta("synced_at")
    info = {
        "name": collection.name,
        "roots": collection.roots,
        "documents": collection.db["documents"].count,
        "chunks": collection.db["chunks"].count,
        "size_mb": round(sum(f.stat().st_size for f in collection.dir.iterdir() if f.is_file()) / 2**20, 2),
        "last_sync": datetime.fromtimestamp(float(synced)).isoformat(timespec="seconds") if synced else None,
        "stale": {kind: len(paths) for kind, paths in stale.items()},
    }
    if stale_names:
        info["stale_files"] = stale
    return info


def cmd_collections(args: argparse.Namespace) -> int:
    from retrieval.collection import Collection, list_collections

    if args.action == "remove":
        collection = Collection(args.name, create=False)
        collection.close()
        shutil.rmtree(collection.dir)
        say(f"removed collection {args.name} (the files it indexed are untouched)")
        return 0
    names = [args.name] if args.action == "show" else list_collections()
    infos = [describe(Collection(name, create=False), stale_names=args.action == "show") for name in names]
    if args.json:
        emit(infos[0] if args.action == "show" else infos, True)
        return 0
    if not infos:
        print("no collections yet; create one with `hearth ingest PATH --collection NAME`")
    for info in infos:
        stale = ", ".join(f"{n} {kind}" for kind, n in info["stale"].items() if n) or "none"
        print(f"{info['name']}: {info['documents']} documents, {info['chunks']} chunks, {info['size_mb']} MB, "
              f"last sync {info['last_sync'] or 'never'}, stale files: {stale}")
        for root in info["roots"]:
            print(f"  root: {root}")
        for kind, paths in info.get("stale_files", {}).items():
            for path in paths:
                print(f"  {kind}: {path}")
    return 0


def _with_roots(args: argparse.Namespace) -> list:
    """The collections named by NAME or --all that know their roots (the others are said, and left out)."""
    from retrieval.collection import Collection, list_collections

    if bool(args.name) == args.all:
        raise HearthError("name one collection, or pass --all")
    chosen = []
    for name in list_collections() if args.all else [args.name]:
        collection = Collection(name, create=False)
        if collection.roots:
            chosen.append(collection)
        else:
            say(f"{name} does not remember its roots (built before Hearth kept them): ingest its paths once more")
    return chosen


def cmd_sync(args: argparse.Namespace) -> int:
    from assistant.cli.docs import with_progress

    for collection in _with_roots(args):
        with_progress(collection, lambda progress: collection.sync(progress), args.json)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    import threading

    from assistant.cli.docs import summary
    from retrieval.watch import Watcher

    collections = _with_roots(args)
    if not collections:
        raise HearthError("nothing to watch")

    said: set[tuple[str, str]] = set()

    def on_sync(name: str, report) -> None:
        for skip in report.skipped:
            if skip not in said:  # a file that stays unreadable is said once, not at every sync
                said.add(skip)
                say(f"skipped {skip[0]}: {skip[1]}")
        if report.changes:
            emit(summary(name, report, args.json), args.json)
            sys.stdout.flush()

    say(f"watching {', '.join(c.name for c in collections)} (Ctrl+C stops)")
    try:
        Watcher(collections, on_sync).run(threading.Event())
    except KeyboardInterrupt:
        pass
    return 0
