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
        why = "the sources may not back this answer"
        if checks.get("relevance") is not None and checks.get("support") is not None:  # the score read the question too
            why += f", or it may not answer the question (its support by the sources alone: {checks['support']:.2f})"
        return f"support score {score:.2f}, below the {threshold:.2f} threshold: {why}"
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


def sentence_lines(checks: dict | None) -> list[str]:
    """One numbered line per checked sentence (the numbers `/verdict N` takes): its verdict and
    support, the source sentence the support model read it against ("[n] line L", that reading's
    support) when the check kept one, and the user's label when there is one."""
    from assistant.grounding.feedback import checked_sentences

    lines = []
    for number, s in enumerate(checked_sentences(checks), 1):
        mark = "\u2713" if s["verdict"] == "supported" else "\u26a0"
        line = f"{number} {mark} \u201c{_short(s['text'], 50)}\u201d"
        r = s.get("receipt")  # older stored checks have none
        if r:
            where = (f"[{r['rank']}] " if r.get("rank") else "") + (f"page {r['page']}" if r.get("page") else
                                                                     f"line {r['line']}" if r.get("line") else "")
            where = where.strip() + ": " if where.strip() else ""  # a check against the chat has no file
            line += f" \u2190 {where}\u201c{_short(r['text'])}\u201d ({r['support']:.2f})"
        if s.get("label"):
            line += f" \u00b7 you: {s['label']}"
        lines.append(line)
    return lines


def footer(message: Message) -> str:
    """What follows a checked answer: its support line, its sources, and each checked sentence."""
    support = support_line(message.checks)
    return "\n".join(([support] if support else []) + source_lines(message.sources) + sentence_lines(message.checks))


def plain(message: Message) -> str:
    """A checked answer for the terminal: marked text, then the support line and the sources."""
    parts = [marked(message.content, message.checks)]
    support = support_line(message.checks)
    if support:
        parts.append(f"({support})")
    if message.sources:
        parts.append("Sources:\n" + "\n".join("  " + line for line in source_lines(message.sources)))
    sentences = sentence_lines(message.checks)
    if sentences:
        parts.append("Checked sentences:\n" + "\n".join("  " + line for line in sentences))
    return "\n\n".join(parts)
