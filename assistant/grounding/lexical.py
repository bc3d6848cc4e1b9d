"""Lexical support: how much of a sentence's content its sources contain, word for word.

Content terms are stemmed words and numbers (stopwords dropped; CJK text as character bigrams;
identifiers such as `OutdoorSeating` or `max_len` also split into their words). A sentence is
checked for coverage (terms and adjacent term pairs found in the sources) and for specifics that
appear nowhere in the sources: numbers, capitalised names, code identifiers and quoted strings are
strong evidence of fabrication when missing. A term the sources mention only as absent or false
("no outdoor seating", `"OutdoorSeating": false`) but the sentence asserts counts as a conflict.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache

import snowballstemmer

from retrieval.keywords import STOPWORDS, index_text

_WORD = re.compile(r"\w+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NUMBER = re.compile(r"\d[\d,.]*\d|\d")
# Spelled-out numbers are read as digits ("twenty-five" -> "25", "three hundred" -> "300", "twice" ->
# "2"), so "three times a day" against "twice a day", or "two dogs" against "2 dogs", compares numbers.
# A bare "one" or "once" is left as a word: far more often "one of", "no one" or "once he left".
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SPELLED = {w: i for i, w in enumerate(_UNITS)} | {w: 10 * i for i, w in enumerate(_TENS, start=2)} | {
    "twice": 2, "thrice": 3, "dozen": 12}
_SCALES = {"hundred": 100, "thousand": 1000}
_SPELLED_NUMBER = re.compile(
    rf"\b(?:(?P<tens>{'|'.join(_TENS)})[- ](?P<unit>{'|'.join(_UNITS[1:10])})|(?P<word>{'|'.join(_SPELLED)}))"
    rf"(?:\s+(?P<scale>{'|'.join(_SCALES)}))?\b", re.IGNORECASE)
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*\b")
_IDENTIFIER = re.compile(r"`([^`]+)`|\b(\w+(?:[._]\w+)+|[a-z]+[A-Z]\w*)\b")
_QUOTED = re.compile(r"[\"“]([^\"”]{3,80})[\"”]")
# `"key": false` in structured text, and a negation word before up to three terms
_FALSE_KEY = re.compile(r"\"?([A-Za-z_][\w ]*)\"?\s*:\s*\"?(?:false|no|none|null)\b", re.I)
_NEGATION = re.compile(r"\b(?:not|no|never|without|lacks?|nor)\b|n't\b", re.I)
_NEGATION_REACH = 3
# A citation marker as answers carry them ("... 1989 [2]."), with the space before it.
CITATION = re.compile(r"\s*\[(\d+)\]")
# A sentence that opens with one of these is about what the sentence before it names.
PRONOUN = re.compile(r"(?:he|she|it|its|they|their|them|his|her|this|these|that|those)\b", re.IGNORECASE)
_STEMMER = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _STEMMER.stemWord(word)


def _as_digits(m: re.Match) -> str:
    if m["tens"]:
        value = _SPELLED[m["tens"].lower()] + _SPELLED[m["unit"].lower()]
    elif m["word"].lower() == "one" and not m["scale"]:
        return m.group()
    else:
        value = _SPELLED[m["word"].lower()]
    return str(value * _SCALES[m["scale"].lower()] if m["scale"] else value)


def spelled_as_digits(text: str) -> str:
    """Text with its spelled-out numbers written as digits."""
    return _SPELLED_NUMBER.sub(_as_digits, text)


def content_terms(text: str) -> list[str]:
    """Stemmed, lower-cased content terms of text in order (stopwords dropped, CJK as bigrams;
    spelled-out numbers as digits)."""
    words = _WORD.findall(_CAMEL.sub(" ", index_text(spelled_as_digits(text))))
    return [_stem(w.lower()) for w in words if w.lower() not in STOPWORDS and w != "_"]


def numbers(text: str) -> set[str]:
    """Numbers without thousands separators or a trailing full stop ("1,000." -> "1000"), spelled-out
    ones as digits."""
    return {n.replace(",", "").rstrip(".") for n in _NUMBER.findall(spelled_as_digits(text))}


def names(text: str) -> set[str]:
    """Capitalised words that are not the first word of the text or of a sentence inside it."""
    out = set()
    for m in _NAME.finditer(text):
        before = text[: m.start()].rstrip()
        if before and before[-1] not in ".!?:\"'“(\n":
            out.add(m.group().lower())
    return out


def identifiers(text: str) -> set[str]:
    """Code identifiers (dotted, snake_case, camelCase, anything in backticks) and quoted strings."""
    found = {(m.group(1) or m.group(2)).lower() for m in _IDENTIFIER.finditer(text)}
    found = {f for f in found if re.search(r"[a-z]", f) and max(map(len, re.split(r"[._]", f))) > 2}  # not "e.g"
    return found | {m.group(1).lower() for m in _QUOTED.finditer(text)}


def negated_terms(text: str) -> Counter:
    """How often each term is stated as absent or false in text."""
    out: Counter = Counter()
    for m in _FALSE_KEY.finditer(text):
        out.update(content_terms(m.group(1)))
    for m in _NEGATION.finditer(text):
        out.update(content_terms(text[m.end() : m.end() + 40])[:_NEGATION_REACH])
    return out


class SourceIndex:
    """The terms, pairs, numbers and specifics of a set of sources, for repeated lookups."""

    def __init__(self, texts: list[str]):
        joined = "\n\n".join(texts)
        terms = content_terms(joined)
        self.terms = set(terms)
        self.pairs = set(zip(terms, terms[1:]))
        self.numbers = numbers(joined)
        self.lower = joined.lower()
        counts = Counter(terms)
        self.only_negated = {t for t, n in negated_terms(joined).items() if n >= counts.get(t, 0)}


FEATURES = ("coverage", "pair_coverage", "missing_terms", "missing_numbers", "missing_names",
            "missing_identifiers", "conflicts", "length")


def lexical_features(sentence: str, sources: SourceIndex) -> dict[str, float] | None:
    """The lexical signals of one sentence, or None when it has no content terms."""
    terms = content_terms(sentence)
    if not terms:
        return None
    pairs = list(zip(terms, terms[1:]))
    missing = sum(t not in sources.terms for t in terms)
    asserted = set(terms) - set(negated_terms(sentence))
    return {
        "coverage": 1 - missing / len(terms),
        "pair_coverage": sum(p in sources.pairs for p in pairs) / len(pairs) if pairs else 1 - missing / len(terms),
        "missing_terms": math.log1p(missing),
        "missing_numbers": float(sum(n not in sources.numbers for n in numbers(sentence))),
        "missing_names": float(sum(n not in sources.lower for n in names(sentence))),
        "missing_identifiers": float(sum(i not in sources.lower for i in identifiers(sentence))),
        "conflicts": float(len(asserted & sources.only_negated)),
        "length": math.log(len(terms)),
    }
