"""`hearth eval answers` and `hearth eval retrieval` on a small hand-made SQuAD 2.0 file."""

import json

import pytest

from assistant.bench.answers import REFUSAL, contains_answer, eval_answers
from assistant.bench.retrieval import eval_squad, load_squad
from assistant.settings import ChatSettings
from backends.params import SamplingParams
from backends.tokenizer import ChatTokenizer
from tests.helpers import ScriptedBackend, hearth

SQUAD = {"version": "v2.0", "data": [
    {"title": "Paris", "paragraphs": [
        {"context": "Paris is the capital of France. The Seine flows through the city from east to west.",
         "qas": [{"id": "1", "question": "What is the capital of France?", "is_impossible": False,
                  "answers": [{"text": "Paris", "answer_start": 0}]},
                 {"id": "2", "question": "Which river flows through Paris?", "is_impossible": False,
                  "answers": [{"text": "The Seine", "answer_start": 32}]}]},
        {"context": "The Louvre in Paris is the most visited museum in the world and holds the Mona Lisa.",
         "qas": [{"id": "3", "question": "Who stole the Louvre's pyramid in 1990?", "is_impossible": True,
                  "answers": []}]}]},
    {"title": "Berlin", "paragraphs": [
        {"context": "Berlin is the capital of Germany. The Berlin Wall fell on 9 November 1989.",
         "qas": [{"id": "4", "question": "When did the Berlin Wall fall?", "is_impossible": False,
                  "answers": [{"text": "9 November 1989", "answer_start": 58}]},
                 {"id": "5", "question": "When was the Berlin Wall rebuilt?", "is_impossible": True,
                  "answers": []}]}]},
]}

# what the scripted model replies to each question: right, wrong (a river that is not there),
# a refusal, right, and an invented answer to an unanswerable question
REPLIES = {
    "What is the capital of France?": "The capital of France is Paris.",
    "Which river flows through Paris?": "The Thames flows through Paris.",
    "Who stole the Louvre's pyramid in 1990?": "The documents do not mention any theft of the pyramid.",
    "When did the Berlin Wall fall?": "It fell on 9 November 1989.",
    "When was the Berlin Wall rebuilt?": "It was rebuilt in 1995.",
}


class ByQuestionBackend(ScriptedBackend):
    """Replies to the question the prompt ends with (the sample order is shuffled)."""

    def stream(self, prompt_ids, params, cancel=None):
        prompt = self.tokenizer.decode(prompt_ids, skip_special=False)
        question = max(REPLIES, key=lambda q: prompt.rfind(q))
        self.replies = [REPLIES[question]]
        yield from super().stream(prompt_ids, params, cancel)


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(SQUAD))
    return path


def test_load_squad_keeps_answers_and_unanswerable_flags(squad_file):
    paragraphs, questions = load_squad(squad_file)
    assert paragraphs[2] == ("Berlin", SQUAD["data"][1]["paragraphs"][0]["context"])
    assert [(q.paragraph, q.answers, q.impossible) for q in questions] == [
        (0, ("Paris",), False), (0, ("The Seine",), False), (1, (), True), (2, ("9 November 1989",), False),
        (2, (), True)]


def test_answer_matching_and_refusals():
    assert contains_answer("It is the Seine, of course.", ("The Seine",))
    assert not contains_answer("It is the Thames.", ("The Seine",))
    assert contains_answer("On 9 november, 1989.", ("9 November 1989",))
    assert not contains_answer("anything", ("",))
    for refusal in ("I don't know based on the documents.", "The document does not mention it.",
                    "This is not specified in the text."):
        assert REFUSAL.search(refusal)
    assert not REFUSAL.search("The capital of France is Paris.")


@pytest.mark.slow
def test_eval_answers_scores_each_reply(squad_file, tiny_tokenizer_dir, smollm2_dir):
    backend = ByQuestionBackend(ChatTokenizer.from_file(tiny_tokenizer_dir), [])
    result = eval_answers(squad_file, ChatSettings(sampling=SamplingParams(seed=0)), backend, limit=10,
                          report=lambda _: None)
    assert (result["n"], result["n_answerable"], result["n_unanswerable"]) == (5, 3, 2)
    assert result["contains_gold"] == round(2 / 3, 4)  # Paris and the date; not the Thames
    assert result["answerable_refused"] == 0.0
    assert result["unanswerable_refused"] == 0.5  # the pyramid refusal; 1995 is an invented answer
    assert result["cut_at_max_tokens"] == 0.0
    assert result["mean_support"] is not None and result["support_auroc_correct"] is not None


def test_eval_retrieval_finds_each_questions_paragraph(squad_file):
    result = eval_squad(squad_file, report=lambda _: None)
    assert result["n_questions"] == 5
    assert result["modes"]["hybrid"]["r5"] == 1.0  # three paragraphs: every gold one is in the top 5


@pytest.mark.slow
def test_eval_answers_keeps_its_rows_and_a_rerun_answers_only_what_is_missing(squad_file, tiny_tokenizer_dir,
                                                                             smollm2_dir, tmp_path):
    asked = []

    class Counting(ByQuestionBackend):
        def stream(self, prompt_ids, params, cancel=None):
            asked.append(prompt_ids)
            yield from super().stream(prompt_ids, params, cancel)

    backend = Counting(ChatTokenizer.from_file(tiny_tokenizer_dir), [])
    settings = ChatSettings(sampling=SamplingParams(seed=0))
    rows = tmp_path / "rows.jsonl"
    quiet = dict(report=lambda _: None, rows_file=rows)
    first = eval_answers(squad_file, settings, backend, limit=3, **quiet)
    assert len(asked) == 3 and len(rows.read_text().splitlines()) == 3
    with open(rows, "a") as f:
        f.write('{"key": "cut sh')  # a crash in the middle of a line
    everything = eval_answers(squad_file, settings, backend, limit=10, **quiet)
    assert len(asked) == 5  # the three kept answers were not asked again
    fresh = eval_answers(squad_file, settings, backend, limit=10, report=lambda _: None)  # no rows file
    assert len(asked) == 10 and (everything | {"seconds": 0}) == (fresh | {"seconds": 0})
    again = eval_answers(squad_file, settings, backend, limit=3, **quiet)
    assert len(asked) == 10 and (again | {"seconds": 0}) == (first | {"seconds": 0})
    # other settings are other answers
    eval_answers(squad_file, settings.replace(k=1), backend, limit=3, **quiet)
    assert len(asked) == 13


def test_a_larger_limit_extends_the_sample_of_a_smaller_one(squad_file, monkeypatch):
    import assistant.bench.answers as answers

    asked = []
    monkeypatch.setattr(answers, "_answer", lambda q, *_: asked.append(q.text) or
                        {"impossible": q.impossible, "correct": False, "refused": True, "cited": False, "cut": False,
                         "tokens": 1, "support": None})
    monkeypatch.setattr(answers, "variant_key", lambda *_: "key")
    for limit in (2, 4):
        eval_answers(squad_file, ChatSettings(), backend=None, limit=limit, report=lambda _: None)
    assert asked[2:4] == asked[:2] and len(set(asked[2:])) == 4


def test_a_grounded_adapter_of_your_own_needs_the_default_model_and_an_adapter_folder(squad_file, tmp_path):
    run = hearth("eval", "answers", "--squad", squad_file, "--grounded-adapter", tmp_path, check=False)
    assert run.returncode == 1 and "not a LoRA adapter folder" in run.stderr
    run = hearth("eval", "answers", "--squad", squad_file, "--grounded-adapter", tmp_path, "--adapter", tmp_path,
                 check=False)
    assert run.returncode == 1 and "applies to the default model (hf or scratch backend)" in run.stderr
