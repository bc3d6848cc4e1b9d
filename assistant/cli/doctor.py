"""hearth doctor [--repair]: check the history database and every collection."""

from __future__ import annotations

import argparse

from assistant.cli.output import emit


def register(sub) -> None:
    p = sub.add_parser(
        "doctor", help="check Hearth's databases and indexes; --repair rebuilds what can be rebuilt",
        description="Checks the history database (SQLite integrity, schema version, message search) and "
        "each collection (SQLite integrity, keyword table, FAISS index and its generation). --repair "
        "rebuilds search tables and FAISS indexes from SQLite, and moves a database SQLite cannot read "
        "aside (never deleting it) before starting a fresh one.")
    p.add_argument("--repair", action="store_true", help="rebuild what can be rebuilt")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per database")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from assistant.doctor import examine

    findings = examine(repair=args.repair)
    if args.json:
        emit([f.to_dict() for f in findings], True)
    for f in [] if args.json else findings:
        if not f.problems:
            print(f"{f.target}: ok ({f.summary})" if f.summary else f"{f.target}: ok")
            continue
        print(f"{f.target}: {f.path}")
        for problem in f.problems:
            print(f"  problem: {problem}")
        for done in f.repaired:
            print(f"  repaired: {done}")
        for left in f.unrepaired:
            print(f"  not repaired: {left}")
        if not args.repair and not f.unrepaired:
            print("  `hearth doctor --repair` fixes this")
    return 0 if all(f.ok for f in findings) else 1
