"""`hearth eval retrieval` (SQuAD) and `hearth bench retrieval` (query latency at scale)."""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from assistant.database import write
from assistant.errors import HearthError
from assistant.files import input_file
from retrieval.collection import Collection
from retrieval.embedder import Embedder
from retrieval.search import MODES, search

KS = (1, 5, 10)


@dataclass(frozen=True)
class SquadQuestion:
    text: str
    paragraph: int  # index into the paragraphs
    answers: tuple[str, ...]  # gold answer strings (empty for SQuAD 2.0's unanswerable questions)
    impossible: bool = False
    answer_starts: tuple[int, ...] = ()  # character offsets of the answers in the paragraph


def load_squad(path: Path) -> tuple[list[tuple[str, str]], list[SquadQuestion]]:
    """Paragraphs as (title, text) and their questions (SQuAD 1.1 or 2.0 JSON)."""
    input_file(path, "the SQuAD file")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise HearthError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise HearthError(f"{path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    paragraphs, questions = [], []
    try:
        for article in data["data"]:
            for para in article["paragraphs"]:
                idx = len(paragraphs)
                paragraphs.append((article["title"].replace("_", " "), para["context"]))
                questions += [SquadQuestion(qa["question"], idx, tuple(a["text"] for a in qa["answers"]),
                                            bool(qa.get("is_impossible")),
                                            tuple(int(a.get("answer_start", -1)) for a in qa["answers"]))
                              for qa in para["qas"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise HearthError(f"{path} is not a SQuAD file (expected {{\"data\": [{{\"title\", \"paragraphs\": "
                          f"[{{\"context\", \"qas\"}}]}}]}}; missing or wrong {exc})") from None
    if not questions:
        raise HearthError(f"{path} has no questions")
    return paragraphs, questions


def _doc_ranking(hits, path_to_para: dict[str, int], k: int) -> list[int]:
    out: list[int] = []
    for hit in hits:
        para = path_to_para[hit.chunk.path]
        if para not in out:
            out.append(para)
        if len(out) == k:
            break
    return out


def baseline_rate(embedder_path: Path, texts: list[str]) -> float:
    """Texts/s of plain sentence-transformers fp32 encode (the reference ingestion speed)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(embedder_path), device="cpu")
    model.encode(texts[:16], batch_size=32)
    start = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - start)


def eval_squad(squad: Path, limit: int | None = None, report: Callable[[str], None] = print,
               baseline_sample: int | None = None, seed: int = 0) -> dict:
    """Index every paragraph as a document, ask the questions, score the gold paragraph's rank."""
    paragraphs, questions = load_squad(squad)
    if limit:
        questions = random.Random(seed).sample(questions, min(limit, len(questions)))
    report(f"{len(paragraphs)} paragraphs, {len(questions)} questions")
    with tempfile.TemporaryDirectory(prefix="hearth-squad-") as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        path_to_para = {}
        for i, (title, text) in enumerate(paragraphs):
            file = docs / f"p{i:05d}.md"
            file.write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
            path_to_para[str(file.resolve())] = i
        embedder = Embedder()
        embedder.encode(["warm-up"])  # load the model first: both rates are measured warm
        collection = Collection("squad", embedder=embedder, root=Path(tmp) / "collections")
        ingest = collection.ingest([docs])
        report(f"ingested {ingest.chunks} chunks in {ingest.seconds:.1f} s ({ingest.chunks_per_s:.1f} chunks/s, "
               f"embedder in {embedder.precision})")
        sample = [r[0] for r in collection.db.execute(
            f"select d.title || char(10) || c.text from chunks c join documents d on d.id = c.doc_id "
            f"order by c.id limit {baseline_sample or -1}")]  # all chunks: the same texts ingestion embedded
        base = baseline_rate(embedder.path, sample)
        report(f"plain sentence-transformers fp32: {base:.1f} chunks/s -> ingestion {ingest.chunks_per_s / base:.2f}x")

        vectors = embedder.encode([q.text for q in questions], batch_size=128)
        results = {}
        for mode in MODES:
            ranks = []
            for q, vec in zip(questions, vectors):
                hits = search(collection, q.text, k=30, mode=mode, query_vec=vec)
                ranking = _doc_ranking(hits, path_to_para, 10)
                ranks.append(ranking.index(q.paragraph) + 1 if q.paragraph in ranking else None)
            results[mode] = {
                **{f"r{k}": round(sum(1 for r in ranks if r and r <= k) / len(ranks), 4) for k in KS},
                "mrr10": round(sum(1 / r for r in ranks if r) / len(ranks), 4),
            }
            report(f"{mode:>8}: " + "  ".join(f"{k}={v}" for k, v in results[mode].items()))

        latencies = []
        for q in questions[:300]:
            start = time.perf_counter()
            search(collection, q.text, k=5, mode="hybrid")  # query embedding included
            latencies.append((time.perf_counter() - start) * 1000)
        collection.close()
    return {
        "n_questions": len(questions),
        "modes": results,
        "ingest_chunks_per_s": round(ingest.chunks_per_s, 2),
        "baseline_ingest_chunks_per_s": round(base, 2),
        "query_p50_ms": round(statistics.median(latencies), 2),
        "query_p95_ms": round(float(np.percentile(latencies, 95)), 2),
    }


def bench_latency(n_chunks: int = 100_000, queries: int = 200, report: Callable[[str], None] = print,
                  seed: int = 0) -> dict:
    """Hybrid k=5 query latency (query embedding included) on a synthetic collection of n chunks.

    Chunk texts are synthetic: 60 words drawn from a 20,000-word pseudo-vocabulary with a Zipf
    (rank^-1) frequency law like natural text; vectors are random unit vectors. Only the
    collection's size and word statistics matter for latency. Queries are 6 words of that text.
    """
    rng = np.random.default_rng(seed)
    syllables = ["ba", "ce", "di", "fo", "gu", "ha", "ki", "lo", "me", "nu", "pa", "re", "si", "to", "vu", "za",
                 "bre", "cla", "dro", "fli", "gra", "plo", "sti", "tru"]
    vocab = sorted({"".join(rng.choice(syllables, size=int(rng.integers(2, 5)))) for _ in range(40_000)})[:20_000]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
        embedder = Embedder()
        collection = Collection("bench", embedder=embedder, root=Path(tmp))
        dim = embedder.dim
        start = time.perf_counter()
        conn = collection.db.conn
        with write(collection.db):
            conn.execute("insert into meta(key, value) values ('dim', ?), ('embedder', ?)", [str(dim), embedder.name])
            conn.execute("insert into documents(id, path, hash, size, mtime, title, kind, n_chunks, ingested_at) "
                         "values (1, 'synthetic', '', 0, 0, 'synthetic', 'text', ?, 0)", [n_chunks])
            for lo in range(0, n_chunks, 10_000):
                n = min(10_000, n_chunks - lo)
                vecs = rng.standard_normal((n, dim)).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                words = rng.choice(len(vocab), size=(n, 60), p=weights)
                rows = [(lo + i + 1, 1, lo + i, " ".join(vocab[w] for w in words[i]), vecs[i].tobytes())
                        for i in range(n)]
                conn.executemany("insert into chunks(id, doc_id, ord, text, start, [end], line_start, line_end, "
                                 "heading, embedding) values (?, ?, ?, ?, 0, 0, 1, 1, '', ?)", rows)
                conn.executemany("insert into chunks_fts(rowid, body) values (?, ?)", [(r[0], r[3]) for r in rows])
            conn.execute("update meta set value = '1' where key = 'generation'")
        collection.rebuild_index()
        report(f"built a synthetic (Zipf-distributed words) collection of {n_chunks} chunks in {time.perf_counter() - start:.1f} s")
        texts = [" ".join(vocab[w] for w in rng.choice(len(vocab), size=6, p=weights)) for _ in range(queries)]
        search(collection, texts[0], k=5)  # warm-up (loads the embedder)
        latencies = []
        for text in texts:
            t0 = time.perf_counter()
            search(collection, text, k=5, mode="hybrid")
            latencies.append((time.perf_counter() - t0) * 1000)
        collection.close()
    result = {"n_chunks": n_chunks, "queries": queries, "mode": "hybrid", "k": 5, "synthetic": True,
              "query_p50_ms": round(statistics.median(latencies), 2),
              "query_p95_ms": round(float(np.percentile(latencies, 95)), 2)}
    report(f"hybrid k=5 over {n_chunks} synthetic chunks: p50 {result['query_p50_ms']} ms, "
           f"p95 {result['query_p95_ms']} ms (query embedding included)")
    return result
