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


def footer(message: Message) -> str:
    """What follows a checked answer: its support line and its sources, one per line."""
    support = support_line(message.checks)
    return "\n".join(([support] if support else []) + source_lines(message.sources))


def plain(message: Message) -> str:
    """A checked answer for the terminal: marked text, then the support line and the sources."""
    parts = [marked(message.content, message.checks)]
    support = support_line(message.checks)
    if support:
        parts.append(f"({support})")
    if message.sources:
        parts.append("Sources:\n" + "\n".join("  " + line for line in source_lines(message.sources)))
    return "\n\n".join(parts)
