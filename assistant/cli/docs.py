"""hearth ingest | search | index | check: document collections and checking answers against files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assistant.cli.output import emit, say
from assistant.config import GROUNDING_GENERAL, GROUNDING_KINDS, GROUNDING_QUESTION
from assistant.errors import HearthError

SEARCH_MODES = ("hybrid", "dense", "keyword")


def add_collection_option(p) -> None:
    p.add_argument("--collection", default="default", help="collection name (default: %(default)s)")


def register(sub) -> None:
    p = sub.add_parser("ingest", help="add files and folders to a document collection")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (walked recursively)")
    add_collection_option(p)
    p.add_argument("--embedder", metavar="PATH", help="sentence-transformers folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--max-mb", type=int, default=20, help="skip files larger than this (default %(default)s MiB)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search a document collection")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="number of results (default %(default)s)")
    p.add_argument("--mode", choices=SEARCH_MODES, default="hybrid",
                   help="hybrid (default): dense + keyword fused; dense: embeddings; keyword: BM25")
    add_collection_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("index", help="status, rebuild or remove documents of a collection")
    ix = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("status", "counts and consistency"), ("rebuild", "rebuild the FAISS index from SQLite"),
                       ("remove", "remove a file or folder's documents")):
        q = ix.add_parser(name, help=text)
        if name == "remove":
            q.add_argument("path")
        if name == "status":
            q.add_argument("--files", action="store_true",
                           help="list every file under the collection's roots: indexed, skipped (and why) or stale")
        add_collection_option(q)
        q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("check", help="check an answer sentence by sentence against source files")
    p.add_argument("--sources", nargs="+", required=True, metavar="FILE", help="the source files (any type ingest reads)")
    p.add_argument("--answer", required=True, metavar="TEXT", help="the answer text, or - to read it from stdin")
    p.add_argument("--question", help="the question the answer replies to (sharpens the model signal)")
    p.add_argument("--kind", choices=GROUNDING_KINDS, default=None,
                   help="what the answer was asked to do, which picks the calibration: question (answer a question "
                        "from the sources; the default with --question), summary, data (describe JSON records), "
                        "general (anything else; the default without --question)")
    p.add_argument("--json", action="store_true",
                   help='print {"score", "threshold", "sentences": [{"text", "start", "end", "score", "verdict", '
                        '"evidence", "receipt"}]}; evidence holds 1-based positions in --sources, receipt the '
                        'source sentence the support model read the sentence against (chunk, path, line, text, '
                        'support)')
    p.set_defaults(func=cmd_check)


def cmd_ingest(args: argparse.Namespace) -> int:
    from retrieval.collection import Collection, list_collections
    from retrieval.embedder import Embedder

    if args.max_mb < 1:
        raise HearthError("--max-mb must be at least 1")
    paths = [Path(p) for p in args.paths]
    missing = [p for p in paths if not p.exists()]
    if missing and len(missing) == len(paths) and args.collection not in list_collections():
        raise HearthError(f"{missing[0]} does not exist")  # a typo; a gone path of a collection removes its documents
    collection = Collection(args.collection, embedder=Embedder(args.embedder) if args.embedder else None)
    report = with_progress(collection, lambda progress: collection.ingest(
        paths, max_bytes=args.max_mb * 1024 * 1024, progress=progress), args.json)
    if report.added + report.updated + report.unchanged + report.renamed + report.removed == 0:
        say(f"hearth: nothing was ingested into {args.collection}")
        return 1  # every path a typo, or nothing readable in them
    return 0


def with_progress(collection, run, as_json: bool):
    """Run an ingest or sync with a progress bar on stderr, then print its skips and its summary."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit="file", desc=f"ingest {collection.name}", file=sys.stderr, disable=as_json)

    def progress(state: dict) -> None:
        bar.total = state["files_total"]
        bar.n = state["files_done"]
        elapsed = bar.format_dict["elapsed"] or 1e-9
        bar.set_postfix(chunks=state["chunks"], chunks_s=f"{state['chunks'] / elapsed:.1f}", refresh=False)
        bar.refresh()

    try:
        report = run(progress)
    finally:
        bar.close()
    for path, reason in report.skipped:
        say(f"skipped {path}: {reason}")
    emit(summary(collection.name, report, as_json), as_json)
    return report


def summary(name: str, report, as_json: bool) -> dict | str:
    """What an ingest or sync did, as the --json object or one line."""
    if as_json:
        return {"collection": name, "added": report.added, "updated": report.updated,
                "unchanged": report.unchanged, "renamed": report.renamed, "removed": report.removed,
                "skipped": len(report.skipped), "chunks": report.chunks, "seconds": round(report.seconds, 2),
                "chunks_per_s": round(report.chunks_per_s, 2)}
    return (f"{name}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{report.renamed} renamed, {report.removed} removed, {len(report.skipped)} skipped; {report.chunks} "
            f"chunks in {report.seconds:.1f} s ({report.chunks_per_s:.1f} chunks/s)")


def cmd_search(args: argparse.Namespace) -> int:
    from retrieval.collection import Collection
    from retrieval.search import search

    if args.k < 1:
        raise HearthError("-k must be at least 1")
    collection = Collection(args.collection, create=False)
    hits = search(collection, args.query, k=args.k, mode=args.mode)
    if args.json:
        emit([h.to_dict(rank) for rank, h in enumerate(hits, 1)], True)
        return 0
    if not hits:
        print("no matches")
    for rank, hit in enumerate(hits, 1):
        c = hit.chunk
        where = f"{c.path}:{c.line_start}" + (f" (page {c.page})" if c.page else "")
        snippet = " ".join(c.text.split())[:200]
        print(f"{rank}. [{hit.score:.3f}] {where}" + (f"  \u2014 {c.heading}" if c.heading else ""))
        print(f"   {snippet}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from retrieval.collection import Collection

    collection = Collection(args.collection, create=False)
    if getattr(args, "files", False):
        files = collection.file_status()
        if args.json:
            emit(files, True)
        for f in [] if args.json else files:
            print(f"{f['status']:<8} {f['path']}  ({f['detail']})")
        return 0
    if args.action == "rebuild":
        collection.rebuild_index()
    elif args.action == "remove":
        removed = collection.remove_path(Path(args.path))
        say(f"removed {removed} document(s) from {args.collection}")
    emit(collection.status(), args.json)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from assistant.grounding import check
    from retrieval.embedder import shared_embedder
    from retrieval.loaders import SkipFile, load

    answer = sys.stdin.read() if args.answer == "-" else args.answer
    if not answer.strip():
        raise HearthError("the answer is empty")
    sources = []
    for n, name in enumerate(args.sources, 1):
        try:
            sources.append((n, load(Path(name)).text))
        except SkipFile as exc:
            raise HearthError(f"{name}: {exc}") from exc
        except FileNotFoundError as exc:
            raise HearthError(f"{name}: no such file") from exc
    kind = args.kind or (GROUNDING_QUESTION if args.question else GROUNDING_GENERAL)
    checks = check(answer, sources, shared_embedder(), question=args.question or "", kind=kind)
    for s in checks.sentences:  # where each receipt's source sentence is
        if s.receipt:
            text = sources[s.receipt["chunk"] - 1][1]
            s.receipt.update(path=args.sources[s.receipt["chunk"] - 1], line=text[: s.receipt["start"]].count("\n") + 1)
    if args.json:
        emit(checks.to_dict(), True)
        return 0
    for s in checks.sentences:
        mark = {"supported": "ok ", "unsupported": "\u26a0  ", "unverifiable": "-  "}[s.verdict]
        cited = f"  (best: {', '.join(args.sources[i - 1] for i in s.evidence)})" if s.evidence else ""
        print(f"{mark}{s.score:.2f}  {s.text.strip()}{cited}")
        if s.receipt:
            r = s.receipt
            print(f"       \u2190 {r['path']} line {r['line']}: \u201c{r['text']}\u201d (support {r['support']:.2f})")
    if checks.score is not None:
        verdict = "supported" if checks.supported else "NOT supported"
        print(f"\nanswer support {checks.score:.2f} ({verdict}; threshold {checks.threshold:.2f})")
    return 0
