"""Training pairs for the support model from human-labelled source/claim files.

Two layouts are read:
- SummaC-style claim files (JSONL: `claim`, `label` 1 consistent / 0 not, `doc_id`), joined by doc_id
  to `documents.jsonl` beside the file;
- TRUE-style CSV files (`grounding`, `generated_text`, `label` 1 consistent / 0 not).

A claim is checked sentence by sentence at run time, so a consistent claim gives one positive per
sentence, and an inconsistent one is used only when it is a single sentence (which sentence of a
longer one is wrong is not labelled). Each claim sentence is paired with the window of its source
that shares the most words with it, and an inconsistent one also with the second: at run time the
best of several windows counts, so no window may support it. Pairs are split into train and validation by source document.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.errors import HearthError
from assistant.files import read_records
from assistant.grounding.support import WINDOW_RADIUS, sentence_spans, top_windows

SUMMAC_DOCUMENTS = "documents.jsonl"
VALIDATION_SHARE = 20  # one source document in 20 is held out


@dataclass(frozen=True)
class Labelled:
    """A labelled claim against its whole source; group names the source document."""

    claim: str
    source: str
    supported: bool
    group: str
    origin: str


@dataclass(frozen=True)
class Pair:
    """One training example: a claim sentence, the passage it is read against, and the label."""

    claim: str
    passage: str
    supported: bool
    group: str
    origin: str


def _group(text: str) -> str:
    return hashlib.sha1(" ".join(text.split()).lower().encode()).hexdigest()[:16]


def read_summac(path: Path) -> list[Labelled]:
    documents_file = path.parent / SUMMAC_DOCUMENTS
    if not documents_file.is_file():
        raise HearthError(f"{documents_file} not found: SummaC claims are joined to their documents by doc_id.")
    documents = {r["doc_id"]: r["document"] for r in read_records(documents_file)}
    return [Labelled(r["claim"], documents[r["doc_id"]], int(r["label"]) == 1, _group(documents[r["doc_id"]]),
                     f"{path.name}:{r.get('dataset', '')}") for r in read_records(path)]


def read_true_csv(path: Path) -> list[Labelled]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8") as f:
        return [Labelled(r["generated_text"], r["grounding"], int(float(r["label"])) == 1, _group(r["grounding"]),
                         path.name) for r in csv.DictReader(f)]


def read_labelled(path: Path) -> list[Labelled]:
    """Labelled claims from one file (the layout is told by its extension)."""
    path = Path(path)
    if not path.is_file():
        raise HearthError(f"{path} not found")
    try:
        records = read_true_csv(path) if path.suffix == ".csv" else read_summac(path)
    except (KeyError, TypeError, ValueError) as exc:
        raise HearthError(f"{path} is not SummaC-style JSONL or TRUE-style CSV (a record lacks or has a wrong "
                          f"{exc})") from None
    if not records:
        raise HearthError(f"{path} holds no labelled claims")
    return records


def load_labelled(paths: list[Path], exclude: list[Path], limit: int | None, seed: int) -> list[Labelled]:
    """Every file's claims, without those whose source document is in an excluded file.

    limit: at most this many claims from each file (a seeded sample).
    """
    banned = {c.group for path in exclude for c in read_labelled(path)}
    out = []
    for path in paths:
        claims = [c for c in read_labelled(path) if c.group not in banned]
        if limit is not None and len(claims) > limit:
            claims = random.Random(seed).sample(claims, limit)
        out.extend(claims)
    return out


def split(pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """(train, validation): one source document in VALIDATION_SHARE is held out, at least one."""
    groups = sorted({p.group for p in pairs}, key=lambda g: int(g, 16))
    held = {g for g in groups if int(g, 16) % VALIDATION_SHARE == 0} or set(groups[:1])
    return [p for p in pairs if p.group not in held], [p for p in pairs if p.group in held]


def claim_sentences(text: str) -> list[str]:
    from retrieval.chunker import sentences

    return [text[a:b].strip() for a, b in sentences(text) if text[a:b].strip()]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 2}


def make_pairs(labelled: list[Labelled], report=print) -> list[Pair]:
    """Training pairs (see the module's docstring).

    The windows of a long source are ranked by the words they share with the claim sentence, not by
    the embedder as at run time: embedding every sentence of the training sources takes most of an
    hour on two cores, and both rankings put the passage a claim is about first.
    """
    single_window = 2 * WINDOW_RADIUS + 1
    pairs: list[Pair] = []
    spans_of: dict[str, list] = {}
    for c in labelled:
        parts = claim_sentences(c.claim)
        if not parts or (not c.supported and len(parts) > 1):
            continue
        spans = spans_of.setdefault(c.group, sentence_spans([c.source]))
        source_words = [_words(c.source[a:b]) for _, a, b in spans] if len(spans) > single_window else None
        for part in parts:
            if source_words is None:
                passages = [c.source]
            else:
                words = _words(part)
                shared = np.array([len(words & w) / (1 + len(w)) ** 0.5 for w in source_words])
                passages = [c.source[w.start : w.end] for w in top_windows(shared, spans, 2)]
            for passage in passages[: 1 if c.supported else 2]:
                pairs.append(Pair(part, passage, c.supported, c.group, c.origin))
    counts = Counter((p.origin, p.supported) for p in pairs)
    for origin in sorted({p.origin for p in pairs}):
        report(f"{origin}: {counts[(origin, True)]} supported, {counts[(origin, False)]} not")
    return pairs
