"""Verdicts users correct: labels stored with the reply, and the examples they make for the calibration."""

import numpy as np
import pytest

from assistant.errors import HearthError
from assistant.grounding import feedback
from assistant.records import Conversation, Message
from assistant.store import Store

SOURCE = "The Rhine is 1,230 kilometres long. It flows into the North Sea near Rotterdam."


def _checks(answer, verdicts):
    """A stored check of `answer`'s sentences (split on '. ') with these verdicts."""
    sentences, start = [], 0
    for text, verdict in zip(answer.split(". "), verdicts):
        text = text if text.endswith(".") else text + "."
        start = answer.index(text, start)
        sentences.append({"text": text, "start": start, "end": start + len(text), "score": 0.5, "verdict": verdict,
                          "evidence": [], "receipt": None})
    return {"score": 0.5, "threshold": 0.6, "sentences": sentences}


def _reply(store, conv, question, answer, verdicts, sources=None):
    store.add_message(conv.id, Message(role="user", content=question))
    src = [{"rank": 1, "path": "rhine.md", "line": 1, "text": SOURCE, "chunk_id": 4}] if sources else []
    return store.add_message(conv.id, Message(role="assistant", content=answer, status="stop", sources=src,
                                              checks=_checks(answer, verdicts)))


def test_mark_turns_right_and_wrong_into_the_users_truth():
    checks = _checks("Hi. The Rhine is long. Napoleon swam it.", ["unverifiable", "supported", "supported"])
    assert [s["text"] for s in feedback.checked_sentences(checks)] == ["The Rhine is long.", "Napoleon swam it."]
    assert feedback.mark(checks, 2, right=False)["label"] == "unsupported"  # the check said supported: wrong
    assert feedback.mark(checks, 1, right=True)["label"] == "supported"
    checks["sentences"][2]["verdict"] = "unsupported"
    assert feedback.mark(checks, 2, right=False)["label"] == "supported"  # a label can be changed
    assert "label" not in checks["sentences"][0]  # the unverifiable sentence is not numbered
    with pytest.raises(HearthError, match="no checked sentence 3: the reply has 2"):
        feedback.mark(checks, 3, right=True)
    with pytest.raises(HearthError, match="no checked sentence"):
        feedback.mark({"sentences": [], "policy": "abstain"}, 1, right=True)


def test_labels_are_stored_with_the_reply_and_read_back_as_examples(tmp_path):
    path = tmp_path / "h.db"
    store = Store(path)
    conv = store.create_conversation(Conversation(title="t", system_prompt=""))
    grounded = _reply(store, conv, "How long is the Rhine?", "The Rhine is 1,230 kilometres long. It was dug by "
                      "Romans.", ["supported", "supported"], sources=True)
    chat = _reply(store, conv, "My cat Miso is 3.", "Miso is 3 years old. Miso likes fish.", ["supported", "supported"])
    _reply(store, conv, "Anything else?", "The Rhine is wide.", ["supported"], sources=True)  # never labelled
    assert store.labelled_replies() == []
    feedback.mark(grounded.checks, 2, right=False)
    store.update_checks(grounded.id, grounded.checks)
    feedback.mark(chat.checks, 1, right=True)
    store.update_checks(chat.id, chat.checks)
    store.close()

    store = Store(path)  # the labels are in the file, with the messages
    assert store.messages(conv.id)[1].checks["sentences"][1]["label"] == "unsupported"
    first, second = feedback.examples(store)
    assert (first.task, first.sources, first.question) == (feedback.GROUNDED_TASK, [SOURCE], "How long is the Rhine?")
    assert first.hallucinated is True and first.spans == first.labelled == [(36, 57)]
    assert first.answer[36:57] == "It was dug by Romans."
    # a reply without documents was checked against what the user had said; half labelled: answer unknown
    assert (second.task, second.sources, second.question) == (feedback.CHAT_TASK,
                                                              ["How long is the Rhine?", "My cat Miso is 3."],
                                                              "My cat Miso is 3.")
    assert second.hallucinated is None and second.spans == [] and second.labelled == [(0, 20)]
    assert (first.kind, second.kind) == ("question", "general")
    store.delete_conversation(conv.id)  # a deleted reply takes its labels with it
    assert feedback.examples(store) == []


def test_fitting_uses_only_known_labels_and_weights_examples():
    from assistant.bench.grounding import Example, Scored, fit
    from assistant.grounding.calibration import SENTENCE_FEATURES

    rng = np.random.default_rng(3)

    def example(i, bad, weight=1.0, known=None):
        rows = rng.normal(size=(2, len(SENTENCE_FEATURES))) + (-1.0 if bad else 1.0)
        return Scored(Example(str(i), str(i), "QA", "", ["s"], "a", bad, []), rows, np.array([bad, bad]),
                      known, weight)

    base = [example(i, i % 2 == 0) for i in range(30)]
    sentence = lambda cal: cal["general"].sentence.coef  # noqa: E731
    # rows whose label is unknown (with a label contradicting their signals) do not move the sentence model
    unknown = example(99, None, known=np.array([False, False]))
    unknown.labels = np.array([True, True])
    unknown.rows = np.full((2, len(SENTENCE_FEATURES)), 5.0)
    assert sentence(fit(base + [unknown])) == pytest.approx(sentence(fit(base)))
    # an example counting twice is the example given twice
    twice = example(100, True)
    assert sentence(fit(base + [Scored(twice.example, twice.rows, twice.labels, None, 2.0)])) == \
        pytest.approx(sentence(fit(base + [twice, twice])), rel=1e-4)
    assert fit(base + [unknown])["general"].answer.coef == pytest.approx(fit(base)["general"].answer.coef)
