"""The `hearth` command: ask, chat, history, setup."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path

from assistant import offline as _offline  # noqa: F401
from assistant.config import DEFAULT_BACKEND, DEFAULT_MAX_NEW_TOKENS, DEFAULT_SYSTEM_PROMPT
from assistant.errors import HearthError

log = logging.getLogger("hearth")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- shared options ---------------------------------------------------------------------------
def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--backend", default=DEFAULT_BACKEND, choices=("hf", "scratch"),
                   help="hf: transformers; scratch: our own decoder and KV cache (default: %(default)s)")
    g.add_argument("--model", metavar="PATH", help="model folder (default: the bundled SmolLM2-135M-Instruct)")
    g.add_argument("--adapter", metavar="PATH", help="LoRA adapter folder to apply (hf backend)")
    g.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="scratch backend weights: fp32 (reference), bf16, int8 (fastest on CPU)")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--system", help="system prompt for a new conversation")
    g.add_argument("--temperature", type=float, default=None, help="0 = greedy (default 0.2)")
    g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default 10, 0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default 1.0 = off)")
    g.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="most tokens in a reply (default %(default)s)")
    g.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")


def sampling_from_args(args: argparse.Namespace):
    """SamplingParams from the command line; invalid values become a HearthError."""
    from backends.sampling import SamplingParams

    defaults = SamplingParams()
    try:
        return SamplingParams(
            temperature=defaults.temperature if args.temperature is None else args.temperature,
            top_k=defaults.top_k if args.top_k is None else args.top_k,
            top_p=defaults.top_p if args.top_p is None else args.top_p,
            seed=args.seed,
        )
    except ValueError as exc:
        raise HearthError(str(exc)) from exc


def open_session(args: argparse.Namespace, store):
    """A ChatSession for the CLI options: a new conversation or --conversation ID."""
    from assistant.conversation import ChatSession
    from backends.registry import load_backend

    if args.max_tokens < 1:
        raise HearthError("--max-tokens must be at least 1")
    sampling = sampling_from_args(args)
    if store is not None and args.conversation is not None:
        store.get_conversation(args.conversation)  # fail fast, before loading a model
    backend = load_backend(args.backend, args.model, args.adapter, report=_stderr, precision=args.precision)
    options = dict(sampling=sampling, max_new_tokens=args.max_tokens)
    if args.conversation is not None:
        if store is None:
            raise HearthError("--conversation needs history; drop --no-history")
        session = ChatSession.resume(backend, store, args.conversation, **options)
        if args.system:
            session.system_prompt = args.system
        return session
    return ChatSession(backend=backend, store=store, system_prompt=args.system or DEFAULT_SYSTEM_PROMPT, **options)


# -- commands ---------------------------------------------------------------------------------
def cmd_setup(args: argparse.Namespace) -> int:
    from backends.hf.default_model import ensure_default_model

    path = ensure_default_model(report=_stderr)
    _stderr(f"Default model: {path}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from assistant.conversation import DoneEvent, TokenEvent
    from assistant.store import Store

    question = sys.stdin.read() if args.question == "-" else args.question
    if not question.strip():
        raise HearthError("the question is empty")
    store = None if args.no_history else Store()
    session = open_session(args, store)
    cancel = threading.Event()
    done = None
    events = session.send(question, cancel)
    try:
        for event in events:
            if isinstance(event, TokenEvent) and not args.json:
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
    if args.json:
        print(json.dumps({
            "answer": done.message.content,
            "backend": session.backend.name,
            "model": session.backend.model_id,
            "conversation_id": session.conversation_id,
            "finish_reason": done.finish_reason,
            "sources": [],
            "checks": None,
            "timings": {
                "ttft_s": done.timings.ttft_s,
                "decode_tok_s": done.timings.decode_tok_s,
                "prompt_tokens": done.timings.prompt_tokens,
                "completion_tokens": done.timings.completion_tokens,
            },
        }, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        if done.finish_reason == "length":
            _stderr("[reply cut at --max-tokens]")
    if done.error:
        _stderr(f"hearth: generation failed: {done.error}")
        return 1
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from assistant.repl import run_repl
    from assistant.store import Store

    store = Store()
    session = open_session(args, store)
    return run_repl(session)


def cmd_history(args: argparse.Namespace) -> int:
    from assistant.export import export
    from assistant.store import Store

    store = Store()
    if args.action == "list":
        convs = store.list_conversations(query=args.search, limit=args.limit)
        if args.json:
            print(json.dumps([c.to_dict() for c in convs], ensure_ascii=False))
        for c in [] if args.json else convs:
            print(f"{c.id:>5}  {c.updated_at[:19].replace('T', ' ')}  {c.title}")
        return 0
    conv = store.get_conversation(args.id)
    if args.action == "show":
        messages = store.messages(conv.id)
        if args.json:
            print(json.dumps({"conversation": conv.to_dict(), "messages": [m.to_dict() for m in messages]}, ensure_ascii=False))
        else:
            print(export(conv, messages, "md"))
    elif args.action == "export":
        text = export(conv, store.messages(conv.id), args.format)
        if args.output:
            from assistant.files import write_atomic

            write_atomic(Path(args.output), text + "\n")
            _stderr(f"wrote {args.output}")
        else:
            print(text)
    elif args.action == "delete":
        store.delete_conversation(conv.id)
        _stderr(f"deleted conversation {conv.id}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    report = (lambda text: None) if args.json else _stderr
    if args.what == "decode":
        from assistant.bench import decode

        result = decode.run(new_tokens=args.tokens, report=report)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hearth",
        description="Hearth: a private, offline chat assistant for the terminal. "
        "With no command, opens the chat.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("ask", help="ask one question and stream the answer")
    p.add_argument("question", help="the question, or - to read it from stdin")
    add_model_options(p)
    add_generation_options(p)
    p.add_argument("--conversation", type=int, metavar="ID", help="continue a stored conversation")
    p.add_argument("--no-history", action="store_true", help="do not store this exchange")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="open the interactive chat")
    add_model_options(p)
    add_generation_options(p)
    p.add_argument("--conversation", type=int, metavar="ID", help="continue a stored conversation")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("history", help="list, show, export or delete stored conversations")
    hs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = hs.add_parser("list", help="conversations, newest first")
    q.add_argument("--search", metavar="TEXT", help="only conversations whose title or messages contain TEXT")
    q.add_argument("--limit", type=int, help="at most this many")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = hs.add_parser("show", help="print one conversation")
    q.add_argument("id", type=int)
    q.add_argument("--json", action="store_true", help="print JSON")
    q = hs.add_parser("export", help="export one conversation")
    q.add_argument("id", type=int)
    q.add_argument("--format", choices=("md", "json", "chatml"), default="md",
                   help="md (readable), json (every field), chatml (one JSONL training line)")
    q.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    q = hs.add_parser("delete", help="delete one conversation")
    q.add_argument("id", type=int)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("bench", help="benchmarks that compare two implementations in one run")
    bs = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = bs.add_parser("decode", help="scratch engine vs transformers generate on the default model")
    q.add_argument("--tokens", type=int, default=256, help="new tokens per measurement (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("setup", help="prepare the bundled default model (one time)")
    p.set_defaults(func=cmd_setup)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv or ["chat"])
    if args.command is None:
        args = parser.parse_args(["chat", *argv])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except HearthError as exc:
        _stderr(f"hearth: error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
