"""Files attached to a conversation (`--file`): grounded like a collection, without making one.

They are ingested into a collection in a temporary folder that lives as long as the session's
collection object (removed when it is garbage collected or the process exits); the conversation
stores only the file paths, so continuing it later reads them again.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Callable

from assistant.errors import HearthError

ATTACHED = "attached"  # the name the temporary collection goes by


def attach(files: tuple[str, ...], report: Callable[[str], None] | None = None):
    """A collection of these files, in a temporary folder; a file that cannot be read is reported
    and left out, and none readable is a HearthError."""
    from retrieval.collection import Collection

    folder = Path(tempfile.mkdtemp(prefix="hearth-attach-"))
    collection = Collection(ATTACHED, root=folder)
    weakref.finalize(collection, shutil.rmtree, folder, ignore_errors=True)
    result = collection.ingest([Path(f) for f in files])
    for path, why in result.skipped:
        if report:
            report(f"skipped {path}: {why}")
    if result.added == 0:
        raise HearthError("none of the attached files could be read")
    return collection
