"""Verdicts users correct: a label on a checked sentence of a stored reply, and the labelled
examples those labels make for fitting and scoring the check's calibration.

A label is the user's truth about one sentence, "supported" or "unsupported", kept in the reply's
stored checks next to the verdict it corrects (`label`, `labelled_at`), so it lives and dies with
the message. Only text is kept (the answer, its sources, the question), never the signals: a refit
after an upgrade measures the labelled replies again with the check as it is then.
"""

from __future__ import annotations

import hashlib
import json

from assistant.config import GROUNDING_GENERAL, GROUNDING_QUESTION
from assistant.errors import HearthError
from assistant.records import now_iso

SUPPORTED, UNSUPPORTED = "supported", "unsupported"
# The tasks feedback examples are filed under (bench.grounding.TASK_KINDS gives their kinds).
GROUNDED_TASK, CHAT_TASK = "feedback: documents", "feedback: chat"
TASK_KINDS = {GROUNDED_TASK: GROUNDING_QUESTION, CHAT_TASK: GROUNDING_GENERAL}


def checked_sentences(checks: dict | None) -> list[dict]:
    """The sentences of a stored check that got a verdict, in order: the chat numbers them 1, 2, …"""
    return [s for s in (checks or {}).get("sentences", []) if s.get("verdict") != "unverifiable"]


def mark(checks: dict | None, number: int, right: bool) -> dict:
    """Label the number-th checked sentence: its verdict was right (the label is the verdict) or
    wrong (the label is the other one). Returns the sentence, changed in place."""
    sentences = checked_sentences(checks)
    if not sentences:
        raise HearthError("that reply has no checked sentence to mark")
    if not 1 <= number <= len(sentences):
        raise HearthError(f"there is no checked sentence {number}: the reply has {len(sentences)} "
                          f"(numbered under it, 1-{len(sentences)})")
    sentence = sentences[number - 1]
    said = sentence["verdict"]
    sentence["label"] = said if right else (UNSUPPORTED if said == SUPPORTED else SUPPORTED)
    sentence["labelled_at"] = now_iso()
    return sentence


def labelled(checks: dict | None) -> list[dict]:
    return [s for s in checked_sentences(checks) if s.get("label") in (SUPPORTED, UNSUPPORTED)]


def examples(store) -> list:
    """Every labelled reply in the history as a bench.grounding.Example: grounded replies are read
    against the sources they were given, others against what the user had said up to then (as the
    check read them). An answer counts as hallucinated when a sentence is labelled unsupported, as
    faithful when every checked sentence is labelled supported, and is left out of the answer-level
    fit otherwise; only labelled sentences enter the sentence-level fit."""
    from assistant.bench.grounding import Example

    out = []
    for reply, earlier in store.labelled_replies():
        said = [m.content for m in earlier if m.role == "user"]
        question = said[-1] if said else ""
        sources = [s["text"] for s in reply.sources] if reply.sources else said
        marks = labelled(reply.checks)
        bad = [(s["start"], s["end"]) for s in marks if s["label"] == UNSUPPORTED]
        everything_labelled = len(marks) == len(checked_sentences(reply.checks))
        hallucinated = True if bad else (False if everything_labelled else None)
        key = hashlib.sha256(json.dumps([reply.content, sources, question]).encode()).hexdigest()[:16]
        out.append(Example(key, f"conversation {reply.conversation_id}", GROUNDED_TASK if reply.sources else CHAT_TASK,
                           question, sources, reply.content, hallucinated, bad,
                           labelled=[(s["start"], s["end"]) for s in marks]))
    return out


def required_examples(store) -> list:
    """examples(store), or a HearthError telling the user how to label when there are none."""
    found = examples(store)
    if not found:
        raise HearthError("no labelled verdicts in the history yet: in the chat, `/verdict N right|wrong` labels "
                          "sentence N of the last reply")
    return found
