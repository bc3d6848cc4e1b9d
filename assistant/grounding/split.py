"""Answer sentences for the check: English and CJK punctuation, abbreviations, numbers, code.

The document chunker's sentence rules do the splitting (abbreviations such as "e.g." and
decimals such as "3.5" never end a sentence); on top of that, an answer's inline code spans and
fenced code blocks are never split inside, and each Markdown list item or line is its own sentence.
"""

from __future__ import annotations

import re

from retrieval.chunker import sentences

_CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]+`", re.S)
_FENCE = re.compile(r"```")
_LINE = re.compile(r"[^\n]+")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def _masked(text: str) -> str:
    """text with sentence punctuation inside code replaced (same length, so offsets hold)."""
    return _CODE.sub(lambda m: re.sub(r"[.!?。！？\n]", "_", m.group()) if not m.group().startswith("```")
                     else re.sub(r"[.!?。！？]", "_", m.group()), text)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of an answer, in order."""
    masked = _masked(text)
    fences = [(m.start(), m.end()) for m in _CODE.finditer(text) if m.group().startswith("```")]
    spans: list[tuple[int, int]] = []
    pos = 0
    for a, b in fences + [(len(text), len(text))]:
        for line in _LINE.finditer(masked, pos, a):
            start = line.start() + len(_LIST_MARK.match(line.group()).group()) if _LIST_MARK.match(line.group()) \
                else line.start()
            spans.extend(sentences(masked, start, line.end()))
        if a < b:
            spans.append((a, b))  # a fenced code block is one unit
        pos = b
    return [(a, b) for a, b in spans if text[a:b].strip()]


def is_code(text: str) -> bool:
    """True for a fenced code block or a sentence that is only an inline code span."""
    stripped = text.strip()
    return stripped.startswith("```") or bool(re.fullmatch(r"`[^`]+`[.!?]?", stripped))
