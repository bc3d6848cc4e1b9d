"""hearth ask | chat | setup: talking to the model."""

from __future__ import annotations

import argparse
import sys
import threading

from assistant.cli.options import add_chat_options, chat_settings
from assistant.cli.output import emit, say
from assistant.errors import HearthError
from assistant.settings import ChatSettings


def settings_for(args: argparse.Namespace, store) -> ChatSettings:
    """The settings of this run: a continued conversation's own, with the options given on top."""
    base = ChatSettings()
    if args.conversation is not None:
        if store is None:
            raise HearthError("--conversation needs history; drop --no-history")
        from assistant.conversation import stored_settings

        base = stored_settings(store, args.conversation, base)  # fails fast on an unknown id
    return chat_settings(args, base)


def register(sub) -> None:
    p = sub.add_parser("ask", help="ask one question and stream the answer")
    p.add_argument("question", help="the question, or - to read it from stdin")
    add_chat_options(p)
    p.add_argument("--no-history", action="store_true", help="do not store this exchange")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="open the chat (full-screen terminal UI; --plain for a simple line REPL)")
    p.add_argument("--plain", action="store_true", help="a plain streaming REPL instead of the full-screen UI")
    add_chat_options(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("setup", help="prepare the bundled default model (one time)")
    p.set_defaults(func=cmd_setup)


def cmd_ask(args: argparse.Namespace) -> int:
    from assistant import present
    from assistant.conversation import DoneEvent, TokenEvent, open_session
    from assistant.store import Store

    question = sys.stdin.read() if args.question == "-" else args.question
    if not question.strip():
        raise HearthError("the question is empty")
    store = None if args.no_history else Store()
    settings = settings_for(args, store)
    session = open_session(settings, store, args.conversation, report=say)
    checked = settings.grounded or settings.check
    stream = not args.json and not checked  # checked answers print once checked
    done = None
    events = session.send(question, threading.Event())
    try:
        for event in events:
            if isinstance(event, TokenEvent) and stream:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, DoneEvent):
                done = event
    except KeyboardInterrupt:
        events.close()  # stores the partial reply, marked cancelled
        if not args.json:
            sys.stdout.write("\n[stopped]\n")
        return 130
    assert done is not None
    backend = session.backend
    if args.json:
        emit({
            "answer": done.message.content,
            "backend": backend.name,
            "model": backend.model_id,
            "precision": backend.precision,
            "adapter": backend.adapter,
            "conversation_id": session.conversation_id,
            "finish_reason": done.finish_reason,
            "sources": done.message.sources,
            "checks": done.message.checks,
            "timings": {
                "ttft_s": done.timings.ttft_s,
                "decode_tok_s": done.timings.decode_tok_s,
                "prompt_tokens": done.timings.prompt_tokens,
                "completion_tokens": done.timings.completion_tokens,
            },
        }, True)
    elif checked:
        print(present.plain(done.message))
    else:
        sys.stdout.write("\n")
    if not args.json and done.finish_reason == "length":
        say("[reply cut at --max-tokens]")
    if done.error:
        say(f"hearth: generation failed: {done.error}")
        return 1
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    if args.plain or args.conversation is not None:
        from assistant.store import Store

        store = Store()
    else:  # the full-screen chat opens the history after its first frame; an unusable HEARTH_HOME fails now
        from assistant.config import ensure_dir, hearth_home

        ensure_dir(hearth_home())
        store = None
    settings = settings_for(args, store)
    if args.plain:
        from assistant.conversation import open_session
        from assistant.repl import run_repl

        return run_repl(open_session(settings, store, args.conversation, report=say))
    chat_app(args, store, settings).run()
    return 0


def chat_app(args: argparse.Namespace, store, settings: ChatSettings | None = None):
    """The full-screen chat for these options (an unknown collection fails before the UI starts)."""
    from tui.app import HearthApp

    settings = settings or settings_for(args, store)
    if settings.collection is not None:
        from assistant.conversation import open_collection

        open_collection(settings.collection)
    return HearthApp(store=store, settings=settings, conversation_id=args.conversation)


def cmd_setup(args: argparse.Namespace) -> int:
    from backends.hf.default_model import ensure_default_model

    path = ensure_default_model(report=say)
    say(f"Default model: {path}")
    return 0
