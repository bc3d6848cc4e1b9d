"""How a checked answer is shown, in the plain CLI and in the chat UI alike: its unsupported
sentences marked, its support score against the threshold, and its numbered sources."""

from __future__ import annotations

from assistant.records import Message

# (before, after) an unsupported sentence: plain text for the terminal, Markdown for the chat UI
PLAIN_MARKS = ("\u26a0 ", " [unsupported]")
MARKDOWN_MARKS = ("\u26a0 ~~", "~~")


def marked(content: str, checks: dict | None, marks: tuple[str, str] = PLAIN_MARKS) -> str:
    """The answer with each unsupported sentence wrapped in `marks`."""
    out = content
    for s in sorted((checks or {}).get("sentences", []), key=lambda s: -s["start"]):
        if s["verdict"] == "unsupported":
            out = out[: s["start"]] + marks[0] + out[s["start"] : s["end"]] + marks[1] + out[s["end"] :]
    return out


def support_line(checks: dict | None) -> str | None:
    """"support score 0.82", with a warning when it is below the stored threshold; None if unchecked."""
    if not checks or checks.get("score") is None:
        return None
    score, threshold = checks["score"], checks.get("threshold")  # older stored checks have no threshold
    if threshold is not None and score < threshold:
        return f"support score {score:.2f}, below the {threshold:.2f} threshold: the sources may not back this answer"
    return f"support score {score:.2f}"


def source_lines(sources: list[dict]) -> list[str]:
    """One line per source: "[n] path (line L or page P) — heading"."""
    lines = []
    for s in sources:
        where = f"page {s['page']}" if s.get("page") else f"line {s['line']}"
        heading = f" \u2014 {s['heading']}" if s.get("heading") else ""
        lines.append(f"[{s['rank']}] {s['path']} ({where}){heading}")
    return lines


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def receipt_lines(checks: dict | None) -> list[str]:
    """One line per checked sentence that has a receipt: the sentence, and the source sentence the
    support model read it against ("[n] line L"), with that reading's support."""
    lines = []
    for s in (checks or {}).get("sentences", []):
        r = s.get("receipt")  # older stored checks have none
        if not r or s["verdict"] == "unverifiable":
            continue
        where = (f"[{r['rank']}] " if r.get("rank") else "") + (f"page {r['page']}" if r.get("page") else
                                                                 f"line {r['line']}" if r.get("line") else "")
        mark = "\u2713" if s["verdict"] == "supported" else "\u26a0"
        lines.append(f"{mark} \u201c{_short(s['text'], 50)}\u201d \u2190 {where.strip()}: "
                     f"\u201c{_short(r['text'])}\u201d ({r['support']:.2f})")
    return lines


def footer(message: Message) -> str:
    """What follows a checked answer: its support line, its sources, and each sentence's evidence."""
    support = support_line(message.checks)
    return "\n".join(([support] if support else []) + source_lines(message.sources) + receipt_lines(message.checks))


def plain(message: Message) -> str:
    """A checked answer for the terminal: marked text, then the support line and the sources."""
    parts = [marked(message.content, message.checks)]
    support = support_line(message.checks)
    if support:
        parts.append(f"({support})")
    if message.sources:
        parts.append("Sources:\n" + "\n".join("  " + line for line in source_lines(message.sources)))
    receipts = receipt_lines(message.checks)
    if receipts:
        parts.append("Evidence:\n" + "\n".join("  " + line for line in receipts))
    return "\n\n".join(parts)
