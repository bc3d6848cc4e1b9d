"""The `hearth` command. Each module registers its subcommands' options next to their handlers;
building the parser imports no model code, so `hearth --help` is quick."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys

from assistant import offline as _offline  # noqa: F401
from assistant.cli import bench, chat, collections, data, docs, doctor, evaluate, history, models, serve, train
from assistant.cli.options import chat_settings  # noqa: F401  (the one place options become ChatSettings)
from assistant.cli.output import say
from assistant.errors import HearthError

COMMAND_MODULES = (chat, history, docs, collections, models, serve, data, train, evaluate, bench, doctor)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hearth",
        description="Hearth: a private, offline chat assistant for the terminal. "
        "With no command, opens the chat.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit code 1."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(argv or ["chat"])
        if args.command is None:
            args = parser.parse_args(["chat", *argv])
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 1
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except HearthError as exc:
        say(f"hearth: error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except sqlite3.Error as exc:  # a database error no command turned into a StorageError
        say(f"hearth: error: database error ({exc}); `hearth doctor` checks Hearth's databases")
        return 1
    except BrokenPipeError:  # the reader went away (`hearth history list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 1
