"""Relevance: does a grounded answer address the question it was asked?

The check's other signals ask whether the sources support each sentence. A wrong answer from a
small model is most often a real source sentence about something else ("What replaced the Sky+
Box?" answered with a sentence about the Sky Q boxes): fully supported, and wrong. Two signals
read the answer against the question instead:

- question_coverage: the share of the question's distinct content terms (stemmed, as the lexical
  signals count them) that the answer repeats; an answer sentence that opens with a pronoun ("She
  sleeps on the windowsill.") also holds the terms of the source sentence before its evidence, which
  names what the pronoun stands for (`context`, check.pronoun_context);
- question_cosine: the embedder's cosine between the question and the answer.

For answers to a question, the calibration's relevance stage (calibration.RelevanceStage, fitted by
`hearth train relevance` on Hearth's own scored answers) combines them with the answer's support.
"""

from __future__ import annotations

import numpy as np

from assistant.grounding import lexical

FEATURES = ("question_coverage", "question_cosine")


def features(question: str, answer: str, embedder, context: str = "") -> dict[str, float] | None:
    """The relevance signals of an answer (context: text whose terms count as the answer's), or None
    when the question has no content terms."""
    asked = set(lexical.content_terms(question))
    text = lexical.CITATION.sub("", answer).strip()
    if not asked or not text:
        return None
    coverage = len(asked & set(lexical.content_terms(f"{text} {context}"))) / len(asked)
    q, a = embedder.encode([question, text])
    return {"question_coverage": coverage, "question_cosine": float(np.dot(q, a))}
