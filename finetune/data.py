"""Plain-text data for pretraining: documents, a 90/10 split by document, token windows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from assistant.errors import HearthError
from assistant.files import input_file


def read_documents(files: list[Path]) -> list[str]:
    """Each file is a document; a single file is split into blank-line separated documents."""
    texts = []
    for f in files:
        input_file(f, "training data")
        texts.append(Path(f).read_text(encoding="utf-8", errors="replace"))
    if len(texts) == 1:
        texts = [d for d in re.split(r"\n\s*\n", texts[0]) if d.strip()]
    if len(texts) < 2:
        raise HearthError("need at least two documents (files, or blank-line separated blocks) to hold out validation")
    return texts


def split_documents(docs: list[str], val_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """The last 10% of documents (at least one) are validation, like nanoGPT's contiguous split."""
    n_val = max(1, int(round(len(docs) * val_fraction)))
    return docs[:-n_val], docs[-n_val:]


@dataclass
class TokenStream:
    """Documents tokenized and joined with an end-of-text token; `chars` is their character count."""

    ids: torch.Tensor
    chars: int

    @classmethod
    def build(cls, docs: list[str], tokenizer, separator: str = "\n\n") -> "TokenStream":
        ids: list[int] = []
        for doc in docs:
            ids.extend(tokenizer.encode(doc + separator))
            ids.append(tokenizer.eos_id)
        return cls(torch.tensor(ids, dtype=torch.long), sum(len(d) + len(separator) for d in docs))

    def batch(self, batch_size: int, context: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows (inputs, next-token targets); the generator decides which, for exact resume."""
        if len(self.ids) <= context + 1:
            raise HearthError(f"training text has {len(self.ids)} tokens; it needs more than the context ({context})")
        starts = torch.randint(0, len(self.ids) - context - 1, (batch_size,), generator=generator)
        x = torch.stack([self.ids[s : s + context] for s in starts.tolist()])
        y = torch.stack([self.ids[s + 1 : s + context + 1] for s in starts.tolist()])
        return x, y

    def windows(self, context: int, batch_size: int):
        """Every token once, in order, as (inputs, targets) batches of consecutive windows."""
        n = (len(self.ids) - 1) // context
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            x = torch.stack([self.ids[i * context : (i + 1) * context] for i in range(lo, hi)])
            y = torch.stack([self.ids[i * context + 1 : (i + 1) * context + 1] for i in range(lo, hi)])
            yield x, y
