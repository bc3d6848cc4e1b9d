"""How commands print: results as --json or as text, messages to stderr."""

from __future__ import annotations

import json
import sys


def say(text: str) -> None:
    """A progress or status line for the user, on stderr (stdout stays the result)."""
    print(text, file=sys.stderr, flush=True)


def quiet(text: str) -> None:
    """A `say` that says nothing (for --json runs)."""


def emit(result, as_json: bool) -> None:
    """Print a result: one JSON line with --json, else "key: value" lines (a dict) or str(result)."""
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    elif isinstance(result, dict):
        print("\n".join(f"{k}: {v}" for k, v in result.items()))
    else:
        print(result)
