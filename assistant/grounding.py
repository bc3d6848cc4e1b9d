"""Sentence-level support of an answer by its sources (the hallucination check).

Each answer sentence is scored against the source chunks it was given: how much of its content
(words, numbers, names, CJK bigrams) the best source contains, and how close it is in meaning
(cosine of embeddings). Sentences with no factual content ("I don't know ...") are
`unverifiable`. The answer's score is the mean over the verifiable sentences.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from retrieval.chunker import sentences
from retrieval.keywords import STOPWORDS, index_text

SUPPORT_THRESHOLD = 0.5
LEXICAL_WEIGHT = 0.6
_TERM = re.compile(r"\w+", re.UNICODE)
_CITATION = re.compile(r"\s*\[(\d+)\]")
_NON_FACTUAL = re.compile(r"^(i don't know|i do not know|i'm not sure|sorry|hello|hi|thanks|thank you)\b", re.I)


@dataclass
class SentenceCheck:
    """One answer sentence and how well the sources support it."""

    text: str
    start: int
    end: int
    score: float
    verdict: str  # "supported" | "unsupported" | "unverifiable"
    evidence: list[int] = field(default_factory=list)  # chunk ids, best first


@dataclass
class Checks:
    """The check of a whole answer."""

    score: float | None
    sentences: list[SentenceCheck]

    def to_dict(self) -> dict:
        return {"score": self.score, "sentences": [asdict(s) for s in self.sentences]}


def content_terms(text: str) -> set[str]:
    """Lower-cased words and numbers that carry content (stopwords dropped), CJK as bigrams."""
    return {t.lower() for t in _TERM.findall(index_text(text)) if t.lower() not in STOPWORDS}


def lexical_support(sentence: str, source: str) -> float:
    """Fraction of the sentence's content terms that occur in the source."""
    terms = content_terms(sentence)
    if not terms:
        return 0.0
    return len(terms & content_terms(source)) / len(terms)


def check(answer: str, sources: list[tuple[int, str]], embedder=None) -> Checks:
    """Score every sentence of the answer against (chunk id, text) sources."""
    spans = sentences(answer)
    if not spans:
        return Checks(score=None, sentences=[])
    texts = [_CITATION.sub("", answer[a:b]).strip() for a, b in spans]
    semantic = None
    if embedder is not None and sources:
        vectors = embedder.encode(texts + [text for _, text in sources])
        semantic = vectors[: len(texts)] @ vectors[len(texts) :].T
    results = []
    for i, ((a, b), text) in enumerate(zip(spans, texts)):
        if not content_terms(text) or _NON_FACTUAL.match(text):
            results.append(SentenceCheck(answer[a:b], a, b, 1.0, "unverifiable"))
            continue
        scores = []
        for j, (_, source) in enumerate(sources):
            lexical = lexical_support(text, source)
            cosine = float(semantic[i, j]) if semantic is not None else lexical
            scores.append(LEXICAL_WEIGHT * lexical + (1 - LEXICAL_WEIGHT) * max(cosine, 0.0))
        order = list(np.argsort(scores)[::-1]) if scores else []
        best = scores[order[0]] if order else 0.0
        results.append(SentenceCheck(
            answer[a:b], a, b, round(best, 4), "supported" if best >= SUPPORT_THRESHOLD else "unsupported",
            [sources[j][0] for j in order[:2] if scores[j] > 0],
        ))
    verifiable = [s.score for s in results if s.verdict != "unverifiable"]
    return Checks(score=round(float(np.mean(verifiable)), 4) if verifiable else None, sentences=results)
