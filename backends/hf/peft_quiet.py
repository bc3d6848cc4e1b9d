"""peft reads a transformers property deprecated in v5 (`is_gradient_checkpointing`) whenever it wraps a
model; the FutureWarning is for peft's authors, not for Hearth's users, so it is silenced here only."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_peft() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
