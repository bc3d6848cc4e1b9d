"""File helpers: atomic writes (a crash never leaves a half-written file behind) and JSON records."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from assistant.errors import HearthError


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_user_file(path: Path, text: str) -> None:
    """Write a file the user named (an export): atomically, into a folder that must exist; a
    problem is a HearthError that names the path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise HearthError(f"{path} is a folder; name a file")
    if not path.parent.is_dir():
        raise HearthError(f"the folder {path.parent} does not exist")
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise HearthError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_records(path: Path) -> list[dict]:
    """JSONL (one record a line) or a JSON list."""
    if not Path(path).is_file():
        raise HearthError(f"{path} does not exist")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HearthError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return data
    except json.JSONDecodeError:
        pass
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise HearthError(f"{path} line {n}: not JSON ({exc.msg})") from None
    return records
