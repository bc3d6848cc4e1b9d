"""A plain streaming chat loop for the terminal (used when the full-screen UI is not wanted)."""

from __future__ import annotations

import sys
import threading

from assistant.conversation import ChatSession, DoneEvent, TokenEvent
from backends.base import label

HELP = "Type a message and press Enter. Ctrl+C stops a reply, Ctrl+D (or /quit) exits."


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
        write("hearth> ")
        events = session.send(text, threading.Event())
        try:
            for event in events:
                if isinstance(event, TokenEvent):
                    write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, DoneEvent) and event.error:
                    write(f"\n[error: {event.error}]")
        except KeyboardInterrupt:
            events.close()  # keeps the partial reply, marked cancelled
            write(" [stopped]")
        write("\n")
