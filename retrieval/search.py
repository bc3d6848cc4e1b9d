"""Dense (FAISS), keyword (FTS5 BM25) and hybrid search over a collection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assistant.database import reported
from retrieval.collection import WHAT, ChunkRecord, Collection
from retrieval.keywords import match_query, query_terms, quote

MODES = ("hybrid", "dense", "keyword")
CANDIDATES = 50  # per ranking, before fusion
# Weight of the keyword ranking in hybrid fusion; the dense ranking gets 1 - this. Chosen on a
# 3,000-question sample of SQuAD v1.1 dev (0.5: R@1 0.803, 0.6: 0.819, 0.7: 0.827 with R@5 falling).
KEYWORD_WEIGHT = 0.6


@dataclass
class Hit:
    """A ranked chunk."""

    chunk: ChunkRecord
    score: float
    dense: float | None = None  # cosine similarity, when the dense ranking saw it
    keyword: float | None = None  # BM25 (higher is better), when the keyword ranking saw it

    def to_dict(self, rank: int) -> dict:
        c = self.chunk
        return {"rank": rank, "score": round(self.score, 6), "path": c.path, "line": c.line_start, "page": c.page,
                "heading": c.heading, "text": c.text, "chunk_id": c.id}


def dense_scores(collection: Collection, query_vec: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(chunk id, cosine) of the k nearest chunks."""
    index = collection.index
    if index.ntotal == 0:
        return []
    scores, ids = index.search(query_vec.reshape(1, -1).astype(np.float32), min(k, index.ntotal))
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]


def _frequent(collection: Collection, term: str, cutoff: int) -> bool:
    """True when the term occurs in more than `cutoff` chunks (counting stops at cutoff + 1)."""
    sql = "select count(*) from (select rowid from chunks_fts where chunks_fts match ? limit ?)"
    return collection.db.execute(sql, [quote(term), cutoff + 1]).fetchone()[0] > cutoff


def keyword_scores(collection: Collection, query: str, k: int) -> list[tuple[int, float]]:
    """(chunk id, BM25) of the k best FTS5 matches; BM25 is negated so higher is better.

    In a large collection, terms found in more than 5% of the chunks (min. 1,000) carry little
    BM25 weight but would make FTS5 score most of the table; they only join the query when every
    term is that common (then all terms are required). FTS5's `rank` column is bm25() evaluated
    once per row.
    """
    terms = query_terms(query)
    if not terms:
        return []
    cutoff = max(1000, collection.db["chunks"].count // 20)
    rare = [t for t in terms if not _frequent(collection, t, cutoff)]
    expr = match_query(rare) if rare else match_query(terms, "AND")
    rows = collection.db.execute(
        "select rowid, rank from chunks_fts where chunks_fts match ? order by rank limit ?", [expr, k])
    return [(int(r[0]), -float(r[1])) for r in rows]


def _normalise(scores: dict[int, float]) -> dict[int, float]:
    """Min-max scale to [0, 1] over the candidates (all equal -> 1)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo < 1e-12:
        return {i: 1.0 for i in scores}
    return {i: (s - lo) / (hi - lo) for i, s in scores.items()}


def fuse(dense: list[tuple[int, float]], keyword: list[tuple[int, float]],
         keyword_weight: float = KEYWORD_WEIGHT) -> list[tuple[int, float]]:
    """Convex combination of min-max normalised scores; a missing score counts as 0.

    Unlike reciprocal rank fusion this keeps how much better the first hit is than the second,
    which is what lets a confident BM25 match win over a vague dense one (and the reverse).
    """
    d, kw = _normalise(dict(dense)), _normalise(dict(keyword))
    fused = {i: (1 - keyword_weight) * d.get(i, 0.0) + keyword_weight * kw.get(i, 0.0) for i in set(d) | set(kw)}
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def search(collection: Collection, query: str, k: int = 5, mode: str = "hybrid",
           query_vec: np.ndarray | None = None) -> list[Hit]:
    """The k best chunks for the query."""
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; choose one of {MODES}")
    dense: list[tuple[int, float]] = []
    keyword: list[tuple[int, float]] = []
    depth = max(k, CANDIDATES) if mode == "hybrid" else k
    if mode in ("hybrid", "dense") and query_vec is None:
        query_vec = collection.embedder.encode([query])[0]
    with reported(WHAT, collection.path), collection.reading():
        if mode in ("hybrid", "dense"):
            dense = dense_scores(collection, query_vec, depth)
        if mode in ("hybrid", "keyword"):
            keyword = keyword_scores(collection, query, depth)
        ranked = {"dense": dense, "keyword": keyword}.get(mode) or (fuse(dense, keyword) if mode == "hybrid" else [])
        ranked = ranked[:k]
        records = collection.chunks_by_id([i for i, _ in ranked])
    dense_map, keyword_map = dict(dense), dict(keyword)
    return [Hit(records[i], s, dense_map.get(i), keyword_map.get(i)) for i, s in ranked if i in records]
