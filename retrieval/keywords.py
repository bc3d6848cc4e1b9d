"""Text preparation for SQLite FTS5 keyword search (English words and CJK bigrams)."""

from __future__ import annotations

import re

# CJK ideographs, kana and hangul have no spaces between words: index overlapping bigrams of them.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
_WORD = re.compile(r"\w+", re.UNICODE)

STOPWORDS = frozenset(
    "a an and are as at be but by did do does for from had has have he her his how i if in into is it its "
    "me my of on or our she so than that the their them then there these they this to was we were what "
    "when where which who whom why will with would you your".split()
)


def _bigrams(run: str) -> str:
    if len(run) == 1:
        return run
    return " ".join(run[i : i + 2] for i in range(len(run) - 1))


def index_text(text: str) -> str:
    """Text as stored in the FTS table: CJK runs become space-separated bigrams."""
    return _CJK.sub(lambda m: f" {_bigrams(m.group())} ", text)


def query_terms(query: str) -> list[str]:
    """The query's distinct lower-cased terms, stopwords dropped, CJK as bigrams."""
    terms: list[str] = []
    for word in _WORD.findall(index_text(query)):
        lowered = word.lower()
        if lowered not in STOPWORDS and lowered not in terms:
            terms.append(lowered)
    return terms


def quote(term: str) -> str:
    """An FTS5 string literal."""
    return '"' + term.replace('"', '""') + '"'


def match_query(terms: list[str], conjunction: str = "OR") -> str | None:
    """An FTS5 MATCH expression over the terms, or None if there are none."""
    return f" {conjunction} ".join(quote(t) for t in terms) or None
