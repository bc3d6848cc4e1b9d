"""The whole check on hand-made grounded answers: faithful ones pass, fabricated ones fail.

The calibration is fitted on RAGTruth and WiCE; these cases are the kind of answer a user's own
documents produce (a paraphrase, an invented number, a swapped name, a flipped negation, an added
claim), so a refit that ranks a plain fabrication above a faithful answer fails here.
"""

import pytest

from assistant.grounding import check, relevance
from assistant.grounding.check import default_scorer, judge, pronoun_context, shipped_calibration, signals

WARRANTY = ("The Hearth X200 kettle comes with a two-year limited warranty covering manufacturing defects. "
            "The warranty does not cover damage from descaling with vinegar. To claim, email "
            "support@hearth.example with your receipt. Replacement units ship within 5 business days.")
LOVELACE = ("Ada Lovelace (1815-1852) was an English mathematician. She worked with Charles Babbage on his "
            "proposed Analytical Engine and in 1843 published notes that include an algorithm for computing "
            "Bernoulli numbers. She is often described as the first computer programmer. Her father was the poet "
            "Lord Byron.")
RHINE = ("The Rhine rises in the Swiss Alps and flows about 1,230 kilometres to the North Sea. It passes Basel, "
         "Strasbourg, Cologne and Duisburg, and reaches the sea near Rotterdam. The river is an important shipping "
         "route; Duisburg has one of the largest inland ports in Europe.")

FAITHFUL = [
    (WARRANTY, "What does the warranty cover?", "The kettle has a two-year warranty for manufacturing defects."),
    (WARRANTY, "What does the warranty cover?",
     "It covers manufacturing defects for two years, but not damage from descaling with vinegar."),
    (WARRANTY, "How do I claim?",
     "Email support@hearth.example with your receipt; a replacement ships within 5 business days."),
    (LOVELACE, "Who was Ada Lovelace?",
     "Ada Lovelace was an English mathematician who worked with Charles Babbage on the Analytical Engine."),
    (LOVELACE, "Who was Ada Lovelace?", "In 1843 she published notes with an algorithm for Bernoulli numbers."),
    (LOVELACE, "Who was Ada Lovelace?", "Her father was the poet Lord Byron."),
    (RHINE, "Tell me about the Rhine.", "The Rhine starts in the Swiss Alps and runs roughly 1,230 km to the North Sea."),
    (RHINE, "Tell me about the Rhine.", "It flows past Basel, Strasbourg and Cologne and meets the sea near Rotterdam."),
    (RHINE, "Tell me about the Rhine.", "Duisburg on the Rhine has one of Europe's largest inland ports."),
]
FABRICATED = [
    (WARRANTY, "What does the warranty cover?", "The warranty lasts five years and covers accidental damage."),
    (WARRANTY, "How do I claim?", "Call the support hotline and a technician will visit your home within 24 hours."),
    (WARRANTY, "What does the warranty cover?", "The two-year warranty also covers damage from descaling with vinegar."),
    (LOVELACE, "Who was Ada Lovelace?", "Ada Lovelace was a French physicist who worked with Alan Turing."),
    (LOVELACE, "Who was Ada Lovelace?", "In 1901 she built the first electronic computer in Geneva."),
    (LOVELACE, "Who was Ada Lovelace?", "Her mother was the novelist Mary Shelley, who taught her chemistry."),
    (RHINE, "Tell me about the Rhine.",
     "The Rhine rises in the Austrian Alps and flows about 3,000 kilometres to the Black Sea."),
    (RHINE, "Tell me about the Rhine.", "It passes Vienna and Budapest before reaching the sea near Hamburg."),
    (RHINE, "Tell me about the Rhine.", "The river is closed to shipping because of its many waterfalls."),
]


@pytest.fixture(scope="module")
def supports(embedder):
    """Answer support of every case under the two calibrations users meet (measured once, judged by each),
    by the sources alone: whether an answer addresses its question is test_relevance.py's."""
    scorer = default_scorer()
    measured = [[(answer, source, signals(answer, [source], embedder, scorer, question))
                 for source, question, answer in cases] for cases in (FAITHFUL, FABRICATED)]
    return {kind: [[judge(answer, [(1, source)], found, shipped_calibration(kind)) for answer, source, found in group]
                   for group in measured] for kind in ("question", "general")}


def test_judging_measured_signals_is_the_whole_check(embedder):
    source, question, answer = FABRICATED[0]
    found = signals(answer, [source], embedder, default_scorer(), question)
    # the relevance signals the question calibration's stage reads
    asked = relevance.features(question, answer, embedder, pronoun_context(answer, found, [source]))
    assert judge(answer, [(1, source)], found, shipped_calibration("question"), asked=asked) == check(
        answer, [(1, source)], embedder, question=question, kind="question")


@pytest.mark.parametrize("kind", ["question", "general"])
def test_every_faithful_answer_outranks_every_fabricated_one(supports, kind):
    faithful, fabricated = supports[kind]
    assert min(c.score for c in faithful) > max(c.score for c in fabricated)


@pytest.mark.parametrize("kind", ["question", "general"])
def test_faithful_answers_pass_and_most_fabricated_ones_fail(supports, kind):
    faithful, fabricated = supports[kind]
    assert all(c.supported for c in faithful)
    assert sum(not c.supported for c in fabricated) >= len(FABRICATED) - 1
    for c in fabricated:
        if not c.supported:
            assert any(s.verdict == "unsupported" for s in c.sentences)
