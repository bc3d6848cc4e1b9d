"""A plain streaming chat loop for the terminal (used when the full-screen UI is not wanted)."""

from __future__ import annotations

import re
import sys
import threading

from assistant import present
from assistant.conversation import ChatSession, DoneEvent, TokenEvent
from backends.base import label

HELP = "Type a message and press Enter. Ctrl+C stops a reply, Ctrl+D (or /quit) exits."
COMMANDS = "Commands: /help, /quit (or /exit). The full-screen chat (hearth chat without --plain) has the rest."
_COMMAND = re.compile(r"(/[A-Za-z]+)(?:\s.*)?", re.S)  # "/word ..." is a command, never a message ("/etc/x" is not)


def run_repl(session: ChatSession, read=input, write=sys.stdout.write) -> int:
    """Read a line, stream the reply, repeat until end of input."""
    write(f"Hearth ({label(session.backend)}). {HELP}\n")
    while True:
        try:
            line = read("you> ")
        except EOFError:
            write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return 0
        command = _COMMAND.fullmatch(text)
        if command:
            name = command.group(1)
            write(f"{HELP}\n{COMMANDS}\n" if name == "/help" else f"unknown command {name}. {COMMANDS}\n")
            continue
        write("hearth> ")
        events = session.send(text, threading.Event())
        streamed, done = [], None
        try:
            for event in events:
                if isinstance(event, TokenEvent):
                    streamed.append(event.text)
                    write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, DoneEvent):
                    done = event
                    if event.error:
                        write(f"\n[error: {event.error}]")
        except KeyboardInterrupt:
            events.close()  # keeps the partial reply, marked cancelled
            write(" [stopped]")
        write("\n")
        if done is not None and (done.message.sources or done.message.checks):
            # a grounded or checked reply: what the check made of it (regenerated or annotated, the stored
            # reply is not the streamed one), then its support, sources and checked sentences
            if done.message.content != "".join(streamed):
                write(f"checked reply: {present.marked(done.message.content, done.message.checks)}\n")
            write(present.footer(done.message) + "\n")
