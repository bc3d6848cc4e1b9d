"""Semantic support: how close in meaning a sentence is to the closest source sentences."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np

from retrieval.chunker import sentences

FEATURES = ("cosine_best", "cosine_top3")
# The vectors of each source's sentences, per embedder, for the most recent sources: evaluations score
# many claims against one article (SummaC, WiCE) and a chat checks several answers against the same chunks.
SOURCE_CACHE_SIZE = 64
_source_cache: "weakref.WeakKeyDictionary[object, OrderedDict[tuple[bool, str], np.ndarray]]" = weakref.WeakKeyDictionary()
_source_lock = threading.Lock()  # checks run in the chat's worker threads


def sentence_spans(texts: list[str]) -> list[tuple[int, int, int]]:
    """(index of the source, start, end) of every sentence of every source, in order."""
    return [(i, a, b) for i, text in enumerate(texts) for a, b in sentences(text)]


def source_sentences(texts: list[str]) -> list[tuple[int, str]]:
    """(index of the source, sentence) for every sentence of every source (the order of sentence_spans)."""
    return [(i, texts[i][a:b]) for i, a, b in sentence_spans(texts)]


def similarities(embedder, answer_sentences: list[str], source_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(cosine of each answer sentence to each source sentence, the source index of each source sentence)."""
    pieces = source_sentences(source_texts)
    if not answer_sentences or not pieces:
        return np.zeros((len(answer_sentences), 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    sources = np.concatenate([sentence_vectors(embedder, text) for text in source_texts])
    return embedder.encode(answer_sentences) @ sources.T, np.array([i for i, _ in pieces])


def sentence_vectors(embedder, text: str, with_previous: bool = False) -> np.ndarray:
    """(sentences of text, dim): the embeddings of one source's sentences (retrieval.chunker.sentences),
    cached. with_previous: each sentence is embedded after the one before it (a sentence that opens
    with "She" or "It" is about what the previous one names)."""
    key = (with_previous, text)
    with _source_lock:
        cache = _source_cache.setdefault(embedder, OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    pieces = [text[a:b] for a, b in sentences(text)]
    if with_previous:
        pieces = [pieces[0]] + [f"{before} {piece}" for before, piece in zip(pieces, pieces[1:])] if pieces else []
    vectors = embedder.encode(pieces)
    with _source_lock:
        cache[key] = vectors
        while len(cache) > SOURCE_CACHE_SIZE:
            cache.popitem(last=False)
    return vectors


def semantic_features(row: np.ndarray) -> dict[str, float]:
    """The semantic signals of one sentence from its row of cosines."""
    if row.size == 0:
        return {"cosine_best": 0.0, "cosine_top3": 0.0}
    top = np.sort(row)[::-1][:3]
    return {"cosine_best": float(top[0]), "cosine_top3": float(top.mean())}


def best_sources(row: np.ndarray, owners: np.ndarray, k: int = 2) -> list[int]:
    """Indices of the k sources holding the sentences closest to this one, best first."""
    ranked: list[int] = []
    for j in np.argsort(row)[::-1]:
        if int(owners[j]) not in ranked:
            ranked.append(int(owners[j]))
        if len(ranked) == k:
            break
    return ranked
