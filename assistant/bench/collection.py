"""`hearth eval collection`: how well a user's own collection finds the answers to their questions.

The questions file is JSONL (or a JSON list) of {"question": ..., "file": ..., "text": optional}: the
file that answers it, and optionally a passage of it. A question is found at rank r when the r-th
distinct document of the hybrid ranking is that file (and, with "text", the hit's chunk holds the
passage, compared without case or extra spaces).
"""

from __future__ import annotations

from pathlib import Path

from assistant.errors import HearthError
from assistant.files import read_located_records

DEPTH = 10  # documents looked at per question


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def evaluate(collection, questions_file: Path, k_search: int = 30) -> dict:
    from retrieval.collection import resolved
    from retrieval.search import search

    items = []
    for where, record in read_located_records(questions_file):
        if not isinstance(record, dict) or not isinstance(record.get("question"), str) \
                or not isinstance(record.get("file"), str):
            raise HearthError(f"{questions_file} {where}: needs \"question\" and \"file\" (text)")
        file = Path(record["file"]).expanduser()
        if not file.is_absolute():  # relative to the questions file, so a folder of notes can carry its own
            file = Path(questions_file).parent / file
        items.append((record["question"], str(resolved(file)), record.get("text")))
    if not items:
        raise HearthError(f"{questions_file} has no questions")
    results = []
    for question, path, text in items:
        ranking: list[str] = []
        rank = None
        for hit in search(collection, question, k=k_search):
            if hit.chunk.path not in ranking:
                ranking.append(hit.chunk.path)
            if hit.chunk.path == path and (text is None or _normal(text) in _normal(hit.chunk.text)):
                rank = ranking.index(path) + 1
                break
            if len(ranking) >= DEPTH:
                break
        results.append({"question": question, "file": path, "rank": rank,
                        "top": ranking[0] if ranking else None})
    n = len(results)
    return {
        "collection": collection.name,
        "questions": n,
        "hit@1": round(sum(1 for r in results if r["rank"] == 1) / n, 4),
        "hit@5": round(sum(1 for r in results if r["rank"] and r["rank"] <= 5) / n, 4),
        "mrr": round(sum(1 / r["rank"] for r in results if r["rank"]) / n, 4),
        "missed": [r for r in results if r["rank"] != 1],
    }
