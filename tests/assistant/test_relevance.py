"""The check's relevance stage: does a grounded answer address its question (relevance.py), read
with its support (calibration.RelevanceStage), fitted by `hearth train relevance` on kept answers."""

import json
import shutil

import numpy as np
import pytest

from assistant.grounding import relevance
from assistant.grounding.calibration import (SENTENCE_FEATURES, WEIGHTS, RelevanceStage, load_calibrations,
                                             save_calibrations)
from assistant.grounding.check import Signals, judge
from tests.helpers import hearth

NOTES = ("Miso was born in March 2019. She sleeps on the windowsill in the kitchen. "
         "The compost heap is turned every week.")


def test_question_coverage_counts_the_questions_stemmed_terms_the_answer_repeats(embedder):
    asked = "Where does Miso sleep?"  # content terms: miso, sleep
    right = relevance.features(asked, "Miso sleeps on the windowsill [1].", embedder)
    half = relevance.features(asked, "Miso was born in March 2019 [1].", embedder)
    other = relevance.features(asked, "The compost heap is turned every week [2].", embedder)
    assert (right["question_coverage"], half["question_coverage"], other["question_coverage"]) == (1.0, 0.5, 0.0)
    assert right["question_cosine"] > other["question_cosine"] + 0.2
    assert relevance.features("Is it?", "Yes.", embedder) is None  # no content terms in the question
    assert relevance.features(asked, "[1]", embedder) is None


def test_an_answer_opening_with_a_pronoun_holds_what_the_sentence_before_its_evidence_names(embedder):
    from assistant.grounding.check import pronoun_context

    cat = "Our cat is called Miso. She sleeps on the windowsill in the kitchen. The compost heap is turned every week."
    answer = "She sleeps on the windowsill in the kitchen [1]. The heap is turned weekly [1]."
    start = cat.index("She")
    receipts = [{"source": 0, "start": start, "end": cat.index(" The compost")}, {"source": 0, "start": 0, "end": 5}]
    found = Signals([(0, 48), (49, len(answer))], [None, None], [[], []], receipts)
    assert pronoun_context(answer, found, [cat]) == "Our cat is called Miso."  # the second opens with no pronoun
    # focused evidence: the chunk's sentences closest first; "She" follows what it followed in the chunk
    focused = "She sleeps on the windowsill in the kitchen. The compost heap is turned every week."
    receipts[0] = {"source": 0, "start": 0, "end": focused.index(" The compost")}
    assert pronoun_context(answer, found, [focused], chunks=[cat]) == "Our cat is called Miso."
    assert pronoun_context(answer, found, [focused]) == ""  # nothing before it in the focused text
    asked = "Where does Miso sleep?"
    assert relevance.features(asked, answer[:48], embedder)["question_coverage"] == 0.5
    assert relevance.features(asked, answer[:48], embedder, "Our cat is called Miso.")["question_coverage"] == 1.0
    # the whole check finds the context through the receipt the support model gave the sentence
    from assistant.grounding.check import check

    checked = check(answer[:48], [(1, cat)], embedder, question=asked, kind="question")
    assert checked.sentences[0].receipt["text"] == "She sleeps on the windowsill in the kitchen."
    assert checked.relevance["question_coverage"] == 1.0


def _stage(seed: int = 0) -> RelevanceStage:
    """A stage fitted on supported answers that are wrong exactly when they repeat little of the question."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(0, 1, 300), rng.uniform(0.2, 0.8, 300)])
    return RelevanceStage.fit(x, x[:, 0] < 0.4, rng.uniform(0.9, 1.0, 300), "synthetic")


def test_the_stage_ranks_answers_by_what_they_repeat_and_round_trips(tmp_path):
    stage = _stage()
    assert stage.model.features == list(relevance.FEATURES)
    on, off = {"question_coverage": 0.9, "question_cosine": 0.5}, {"question_coverage": 0.1, "question_cosine": 0.5}
    assert stage.score(0.95, on) > stage.threshold > stage.score(0.95, off)
    # the support keeps its weight: an answer its sources do not back fails however much of the question it repeats
    assert stage.score(0.2, on) < stage.threshold and stage.score(0.5, on) == pytest.approx(stage.score(1.0, on) / 2)
    calibrations = load_calibrations()
    calibrations["question"].relevance = stage
    save_calibrations(calibrations, tmp_path / "weights.json")
    loaded = load_calibrations(tmp_path / "weights.json")
    assert loaded["question"].relevance.score(0.9, on) == pytest.approx(stage.score(0.9, on))
    assert loaded["question"].relevance.threshold == stage.threshold
    assert loaded["general"].relevance is None and "relevance" not in loaded["general"].to_dict()


def test_a_stage_fitted_on_other_inputs_is_refused(tmp_path):
    data = json.loads(WEIGHTS.read_text())
    data["question"]["relevance"] = {"model": _stage().model.__dict__ | {"features": ["x", "y"]},
                                     "threshold": 0.5}
    (tmp_path / "weights.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="hearth train relevance"):
        load_calibrations(tmp_path / "weights.json")


def test_judge_reads_the_stage_only_with_relevance_signals():
    from dataclasses import replace

    shipped = load_calibrations()["question"]
    # a calibration sure of every sentence's and answer's support (P(hallucinated) = 0.0067), with the stage
    def sure(model):
        return replace(model, coef=[0.0] * len(model.coef), intercept=-5.0)

    question = replace(shipped, sentence=sure(shipped.sentence), answer=sure(shipped.answer), base=None,
                       relevance=_stage())
    answer = "Miso sleeps on the windowsill."
    found = Signals([(0, len(answer))], [np.full(len(SENTENCE_FEATURES), 0.5)], [[0]], [None])
    plain = judge(answer, [(1, NOTES)], found, question)
    assert plain.score == plain.support and plain.threshold == question.answer_threshold and plain.relevance is None
    on = judge(answer, [(1, NOTES)], found, question, asked={"question_coverage": 1.0, "question_cosine": 0.6})
    off = judge(answer, [(1, NOTES)], found, question, asked={"question_coverage": 0.0, "question_cosine": 0.1})
    assert on.support == off.support == plain.support == 0.9933
    assert on.threshold == off.threshold == question.relevance.threshold
    assert on.score > on.threshold > off.score and on.supported and not off.supported
    assert off.relevance == {"question_coverage": 0.0, "question_cosine": 0.1}
    # a sentence's verdict is about its support: failing the question does not mark it
    assert [s.verdict for s in off.sentences] == [s.verdict for s in plain.sentences] == ["supported"]
    assert off.to_dict()["support"] == plain.support


SQUAD = {"version": "1.1", "data": [{"title": "Notes", "paragraphs": [{"context": NOTES, "qas": [
    {"id": "1", "question": "Where does Miso sleep?", "answers": [{"text": "windowsill", "answer_start": 40}]},
    {"id": "2", "question": "When was Miso born?", "answers": [{"text": "March 2019", "answer_start": 17}]},
    {"id": "3", "question": "How often is the compost heap turned?",
     "answers": [{"text": "every week", "answer_start": 100}]},
]}]}]}


def _row(question: int, reply: str, correct: bool, refused: bool = False, support=0.9, **more) -> str:
    """A row as `eval answers --rows` keeps it (a key per row: answers of several settings)."""
    return json.dumps({"key": reply[:12], "question": question, "impossible": False, "correct": correct,
                       "refused": refused,
                       "cited": not refused, "cut": False, "tokens": 9, "support": None if refused else support,
                       "reply": reply} | more)


def test_train_relevance_fits_the_stage_on_kept_answers(tmp_path, embedder):
    squad, rows, out = tmp_path / "squad.json", tmp_path / "rows.jsonl", tmp_path / "weights.json"
    squad.write_text(json.dumps(SQUAD))
    shutil.copy(WEIGHTS, out)
    rows.write_text("\n".join([
        _row(0, "Miso sleeps on the windowsill in the kitchen [1].", True),
        _row(0, "Miso was born in March 2019 [1].", False, support=0.95),
        # the stage reads the support by the sources alone where the row has it, not the score it was given
        _row(1, "Miso was born in March 2019 [1].", True, support=0.5, answer_support=0.92),
        _row(1, "The compost heap is turned every week [1].", False),
        _row(2, "The compost heap is turned every week [1].", True),
        _row(2, "I don't know based on the documents.", False, refused=True),  # refusals are not scored
    ]) + "\n")
    run = hearth("train", "relevance", "--squad", str(squad), "--rows", str(rows), "--out", str(out), "--json")
    result = json.loads(run.stdout.splitlines()[-1])
    assert (result["answers"], result["wrong"]) == (5, 2)
    assert result["fit_auroc"] == 1.0  # the wrong ones repeat less of their questions
    stage = load_calibrations(out)["question"].relevance
    assert stage is not None and "5 answers (2 wrong)" in stage.fitted_on
    assert load_calibrations(out)["general"].to_dict() == load_calibrations()["general"].to_dict()


def test_train_relevance_refuses_rows_of_another_file_and_rows_all_right(tmp_path):
    squad, rows = tmp_path / "squad.json", tmp_path / "rows.jsonl"
    squad.write_text(json.dumps(SQUAD))
    rows.write_text(_row(7, "Miso sleeps on the windowsill.", True) + "\n")
    run = hearth("train", "relevance", "--squad", str(squad), "--rows", str(rows), "--out", str(tmp_path / "w"),
                 check=False)
    assert run.returncode != 0 and "not kept for" in run.stderr
    rows.write_text(_row(0, "Miso sleeps on the windowsill.", True) + "\n")
    run = hearth("train", "relevance", "--squad", str(squad), "--rows", str(rows), "--out", str(tmp_path / "w"),
                 check=False)
    assert run.returncode != 0 and "right and wrong" in run.stderr
    run = hearth("train", "relevance", "--squad", str(tmp_path / "none.json"), "--rows", str(rows), check=False)
    assert run.returncode != 0 and "does not exist" in run.stderr


def test_a_score_below_the_threshold_names_the_question_when_the_stage_read_it():
    from assistant.present import support_line

    plain = {"score": 0.3, "threshold": 0.6, "sentences": []}
    assert support_line(plain) == "support score 0.30, below the 0.60 threshold: the sources may not back this answer"
    read = plain | {"support": 0.97, "relevance": {"question_coverage": 0.0, "question_cosine": 0.1}}
    assert support_line(read) == ("support score 0.30, below the 0.60 threshold: the sources may not back this answer, "
                                  "or it may not answer the question (its support by the sources alone: 0.97)")
    assert support_line(read | {"score": 0.7}) == "support score 0.70"


def test_the_shipped_check_fails_a_supported_answer_to_another_question(embedder):
    from assistant.grounding.check import check

    asked = "Where does Miso sleep?"
    right = check("Miso sleeps on the windowsill in the kitchen [1].", [(1, NOTES)], embedder, question=asked,
                  kind="question")
    other = check("The compost heap is turned every week [1].", [(1, NOTES)], embedder, question=asked,
                  kind="question")
    assert right.relevance["question_coverage"] == 1.0 and other.relevance["question_coverage"] == 0.0
    assert right.supported and not other.supported
    assert other.score < other.support  # the sources back it: the question is what it misses
    unchecked = check("The compost heap is turned every week [1].", [(1, NOTES)], embedder, kind="question")
    assert unchecked.relevance is None and unchecked.score == unchecked.support  # no question, no stage


def test_a_calibration_of_your_own_without_a_stage_uses_the_shipped_one():
    from assistant.grounding.calibration import for_kind
    from assistant.grounding.check import active_calibrations, personal_weights

    data = json.loads(WEIGHTS.read_text())  # yours: fitted before the stage, with no question calibration of its own
    del data["question"]
    personal_weights().parent.mkdir(parents=True, exist_ok=True)
    personal_weights().write_text(json.dumps(data))
    active = active_calibrations()
    shipped = load_calibrations()
    assert for_kind(active, "question").relevance == shipped["question"].relevance is not None
    assert for_kind(active, "question").answer.coef == shipped["general"].answer.coef  # your (here: general) support
    assert for_kind(active, "general").relevance is None
