"""hearth history list | show | export | delete: stored conversations."""

from __future__ import annotations

import argparse
from pathlib import Path

from assistant.cli.output import emit, say
from assistant.export import FORMATS


def register(sub) -> None:
    p = sub.add_parser("history", help="list, show, export or delete stored conversations")
    hs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = hs.add_parser("list", help="conversations, newest first")
    q.add_argument("--search", metavar="TEXT", help="only conversations whose title or messages contain TEXT")
    q.add_argument("--limit", type=int, help="at most this many")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_list)
    q = hs.add_parser("show", help="print one conversation")
    q.add_argument("id", type=int)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_show)
    q = hs.add_parser("export", help="export one conversation")
    q.add_argument("id", type=int)
    q.add_argument("--format", choices=FORMATS, default="md",
                   help="md (readable), json (every field), chatml (one JSONL training line)")
    q.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    q.set_defaults(func=cmd_export)
    q = hs.add_parser("delete", help="delete one conversation")
    q.add_argument("id", type=int)
    q.set_defaults(func=cmd_delete)


def _store():
    from assistant.store import Store

    return Store()


def cmd_list(args: argparse.Namespace) -> int:
    convs = _store().list_conversations(query=args.search, limit=args.limit)
    if args.json:
        emit([c.to_dict() for c in convs], True)
    for c in [] if args.json else convs:
        print(f"{c.id:>5}  {c.updated_at[:19].replace('T', ' ')}  {c.title}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from assistant.export import export

    store = _store()
    conv = store.get_conversation(args.id)
    messages = store.messages(conv.id)
    if args.json:
        emit({"conversation": conv.to_dict(), "messages": [m.to_dict() for m in messages]}, True)
    else:
        print(export(conv, messages, "md"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from assistant.export import export

    store = _store()
    conv = store.get_conversation(args.id)
    text = export(conv, store.messages(conv.id), args.format)
    if args.output:
        from assistant.files import write_user_file

        write_user_file(Path(args.output), text + "\n")
        say(f"wrote {args.output}")
    else:
        print(text)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = _store()
    conv = store.get_conversation(args.id)
    store.delete_conversation(conv.id)
    say(f"deleted conversation {conv.id}")
    return 0
