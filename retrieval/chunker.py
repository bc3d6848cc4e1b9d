"""Structure-aware chunking: headings, then paragraphs, then sentences, packed to a token budget.

Chunks never cross a heading. Each keeps its character span in the document's text, its line
numbers, its PDF page, and its heading path; `embed_text` prefixes the document title and heading
path so a chunk that says "it returns None" still says what "it" is.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Callable

from retrieval.loaders import HEADED_KINDS, LoadedDocument

DEFAULT_TARGET_TOKENS = 224  # + the title/heading prefix stays within MiniLM's 256
DEFAULT_OVERLAP_TOKENS = 40
# A chunk also stays within this many characters per budget token: the embedder's tokenizer counts a
# long run without spaces as one unknown token, but the chat model's tokenizer does not.
MAX_CHARS_PER_TOKEN = 8

_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^(```|~~~)")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}[ \t]*$")
# A sentence ends at . ! ? (followed by space) or at the CJK full stops, which need no space.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=\S)|(?<=[。！？])")
_ABBREVIATIONS = {
    "e.g.", "i.e.", "etc.", "mr.", "mrs.", "ms.", "dr.", "prof.", "vs.", "fig.", "no.", "st.", "jr.", "sr.", "u.s.",
    "approx.", "al.", "cf.", "inc.", "ltd.", "co.", "corp.", "mt.", "ft.", "vol.", "pp.", "jan.", "feb.", "mar.",
    "apr.", "jun.", "jul.", "aug.", "sep.", "sept.", "oct.", "nov.", "dec.",
}


@dataclass
class Chunk:
    """A piece of a document, with where it came from."""

    text: str
    start: int
    end: int
    line_start: int
    line_end: int
    page: int | None
    heading: str
    title: str

    @property
    def embed_text(self) -> str:
        heading = self.heading
        if heading == self.title or heading.startswith(self.title + " > "):
            heading = heading[len(self.title) :].lstrip(" >")  # a Markdown H1 usually is the title
        context = " > ".join(p for p in (self.title, heading) if p)
        return f"{context}\n{self.text}" if context else self.text


@dataclass
class _Section:
    start: int
    end: int
    heading: str


def sections(text: str, kind: str) -> list[_Section]:
    """Split at Markdown (ATX) or reStructuredText headings; each section carries its heading path."""
    if kind not in HEADED_KINDS:
        return [_Section(0, len(text), "")]
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    marks: list[tuple[int, int, str]] = []  # (offset where the section body starts, level, title)
    heading_starts: list[int] = []
    rst_levels: list[str] = []
    in_fence = False
    for i, line in enumerate(lines):
        stripped = line.rstrip("\r\n")
        if _FENCE.match(stripped):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = _ATX.match(stripped)
        if m and kind != "rst":
            marks.append((offsets[i + 1], len(m.group(1)), m.group(2).strip()))
            heading_starts.append(offsets[i])
            continue
        if kind == "rst" and i + 1 < len(lines) and stripped.strip():
            under = lines[i + 1].rstrip("\r\n")
            if _RST_UNDERLINE.match(under) and len(under.strip()) >= len(stripped.strip()) and not _RST_UNDERLINE.match(stripped):
                char = under.strip()[0]
                if char not in rst_levels:
                    rst_levels.append(char)
                marks.append((offsets[i + 2], rst_levels.index(char) + 1, stripped.strip()))
                heading_starts.append(offsets[i])
    out: list[_Section] = []
    first_end = heading_starts[0] if heading_starts else len(text)
    if text[:first_end].strip():
        out.append(_Section(0, first_end, ""))
    path: list[tuple[int, str]] = []
    for n, (body_start, level, title) in enumerate(marks):
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
        end = heading_starts[n + 1] if n + 1 < len(marks) else len(text)
        out.append(_Section(body_start, end, " > ".join(t for _, t in path)))
    return out


def _spans(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    """Non-blank pieces of text[start:end] between matches of pattern, stripped, as spans."""
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, end))
    result = []
    for a, b in out:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            result.append((a, b))
    return result


def paragraphs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans separated by blank lines."""
    return _spans(text, start, end, re.compile(r"\n[ \t]*\n"))


def sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans (English and CJK punctuation; common abbreviations do not end a sentence)."""
    end = len(text) if end is None else end
    raw = _spans(text, start, end, _SENTENCE_END)
    merged: list[tuple[int, int]] = []
    for a, b in raw:
        if merged:
            prev_a, prev_b = merged[-1]
            last_word = text[prev_a:prev_b].rsplit(None, 1)[-1].lower() if text[prev_a:prev_b].split() else ""
            # an abbreviation, an initial ("J.") or a list number ("2.") alone does not end a sentence
            if last_word in _ABBREVIATIONS or re.fullmatch(r"(?:[a-z]\.)+", last_word) \
                    or re.fullmatch(r"\d+\.", text[prev_a:prev_b].strip()):
                merged[-1] = (prev_a, b)
                continue
        merged.append((a, b))
    return merged


def _longest_fit(text: str, start: int, limit: int, fits: Callable[[int, int], bool]) -> int:
    """The largest end in (start, limit] with fits(start, end); at least start + 1 (one character)."""
    lo, hi, best = start + 1, limit, start + 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(start, mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def _split_long(text: str, span: tuple[int, int], fits: Callable[[int, int], bool], target: int,
                max_chars: int) -> list[tuple[int, int]]:
    """Break a span that does not fit into word-aligned windows that do; a word that does not fit
    on its own (minified code, base64, a line of CJK) is cut between characters.

    Work stays linear in the span: a window of `target` tokens holds at most `target` words and
    `max_chars` characters, so no probe tokenizes more than that.
    """
    a, b = span
    words: list[tuple[int, int]] = []
    for m in re.finditer(r"\S+", text[a:b]):
        start, end = a + m.start(), a + m.end()
        while end - start > target // 4 and not fits(start, end):  # shorter words fit (<= 4 tokens a character)
            cut = _longest_fit(text, start, min(end, start + max_chars), fits)
            words.append((start, cut))
            start = cut
        words.append((start, end))
    out, i = [], 0
    while i < len(words):
        j = i + 1
        lo, hi = i + 1, min(len(words), i + target)
        while lo <= hi:  # largest j whose window fits
            mid = (lo + hi) // 2
            if words[mid - 1][1] - words[i][0] <= max_chars and fits(words[i][0], words[mid - 1][1]):
                j, lo = mid, mid + 1
            else:
                hi = mid - 1
        out.append((words[i][0], words[j - 1][1]))
        i = j
    return out


def chunk_document(doc: LoadedDocument, count_tokens: Callable[[str], int],
                   target_tokens: int = DEFAULT_TARGET_TOKENS,
                   overlap_tokens: int = DEFAULT_OVERLAP_TOKENS) -> list[Chunk]:
    """Chunks of a loaded document, each at most about target_tokens embedder tokens."""
    text = doc.text
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    max_chars = target_tokens * MAX_CHARS_PER_TOKEN

    def fits(a: int, b: int) -> bool:
        return b - a <= max_chars and count_tokens(text[a:b]) <= target_tokens

    chunks: list[Chunk] = []
    for section in sections(text, doc.kind):
        units: list[tuple[int, int, int]] = []  # (start, end, tokens)
        for para in paragraphs(text, section.start, section.end):
            if fits(*para):
                units.append((*para, count_tokens(text[para[0] : para[1]])))
                continue
            pieces = [para] if doc.kind == "code" else sentences(text, *para)
            for piece in pieces:
                windows = [piece] if fits(*piece) else _split_long(text, piece, fits, target_tokens, max_chars)
                units.extend((*w, count_tokens(text[w[0] : w[1]])) for w in windows)
        i = 0
        while i < len(units):
            j, total = i, 0
            while j < len(units) and (j == i or (total + units[j][2] <= target_tokens
                                                 and units[j][1] - units[i][0] <= max_chars)):
                total += units[j][2]
                j += 1
            a, b = units[i][0], units[j - 1][1]
            chunks.append(Chunk(
                text=text[a:b], start=a, end=b,
                line_start=bisect.bisect_right(line_starts, a),
                line_end=bisect.bisect_right(line_starts, max(a, b - 1)),
                page=(bisect.bisect_right(doc.page_starts, a) if doc.page_starts else None),
                heading=section.heading, title=doc.title,
            ))
            if j >= len(units):
                break
            # Overlap: start the next chunk at the last unit when it is small enough.
            i = j - 1 if j - 1 > i and units[j - 1][2] <= overlap_tokens else j
    return chunks
