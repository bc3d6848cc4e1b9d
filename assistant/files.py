"""File helpers: atomic writes (a crash never leaves a half-written file behind) and JSON records."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

from assistant.errors import HearthError


def not_regular(path: Path) -> str | None:
    """Why a path is nothing to read (a FIFO, socket or device, a symlink loop), else None."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return "symlink loop" if exc.errno == errno.ELOOP else f"cannot stat ({exc.strerror})"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({kind})"


def input_file(path: Path, what: str) -> Path:
    """A file the user named to read from, or a HearthError saying why it cannot be read."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise HearthError(f"{what} {path} does not exist")
    why = not_regular(path) or ("is a folder" if path.is_dir() else None)
    if why:
        raise HearthError(f"{what} {path}: {why}")
    return path


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
    return [record for _, record in read_located_records(path)]


def read_located_records(path: Path) -> list[tuple[str, dict]]:
    """The records of a JSONL file or JSON list, each with where it is ("line 7", "record 3"),
    so an error about one can point the user at it."""
    input_file(path, "the data file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HearthError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return [(f"record {n}", record) for n, record in enumerate(data, 1)]
    except json.JSONDecodeError:
        pass
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise HearthError(f"{path} line {n}: not JSON ({exc.msg})") from None
    return records
