"""`hearth data grounded-sft`: SQuAD questions as the grounded prompts `ask --docs` sends, with cited
answer sentences and refusals."""

import json

from assistant import rag
from tests.assistant.test_eval_squad import SQUAD
from tests.helpers import hearth


def examples(path):
    return [json.loads(line)["messages"] for line in path.read_text().splitlines()]


def test_grounded_sft_cites_the_source_holding_the_answer_and_refuses_without_it(tmp_path, embedder):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD))
    out = tmp_path / "grounded.jsonl"
    counts = json.loads(hearth("data", "grounded-sft", "--squad", squad, "--out", out, "--gold-removed-share", "0",
                               "-k", "2", "--json").stdout)
    assert (counts["answerable"], counts["unanswerable_squad2"], counts["unanswerable_gold_removed"]) == (3, 2, 0)
    by_question = {m[1]["content"]: m for m in examples(out)}
    system, user, reply = by_question["When did the Berlin Wall fall?"]
    assert system["content"].startswith("You are a helpful assistant. Use the following documents to answer.")
    number = int(reply["content"].rsplit("[", 1)[1].split("]")[0])
    assert reply["content"] == f"The Berlin Wall fell on 9 November 1989 [{number}]."
    source = system["content"].split(f"Document [{number}]")[1].split("Document [")[0]
    assert "The Berlin Wall fell on 9 November 1989." in source
    # the layout the grounded-answer adapter reads: the evidence sentences closest to the question
    contexts = [p["context"] for article in SQUAD["data"] for p in article["paragraphs"]]
    sentences = [x.strip() + "." for c in contexts for x in c.split(".") if x.strip()]
    assert sum(x in system["content"] for x in sentences) == rag.ADAPTER_FOCUS
    assert by_question["When was the Berlin Wall rebuilt?"][2]["content"] == rag.ABSTAIN
    # sources are named within the data's own folder, so the same command writes the same bytes
    assert "(docs/001.md, line " in by_question["When did the Berlin Wall fall?"][0]["content"]
    again = tmp_path / "again.jsonl"
    hearth("data", "grounded-sft", "--squad", squad, "--out", again, "--gold-removed-share", "0", "-k", "2")
    assert again.read_bytes() == out.read_bytes()

    # every answerable question asked without its gold paragraph: a refusal, with no source holding the answer
    refusals = tmp_path / "refusals.jsonl"
    counts = json.loads(hearth("data", "grounded-sft", "--squad", squad, "--out", refusals, "--gold-removed-share",
                               "1", "-k", "1", "--json").stdout)
    assert counts["answerable"] == 0 and counts["unanswerable_gold_removed"] >= 1
    for system, user, reply in examples(refusals):
        assert reply["content"] == rag.ABSTAIN
        if user["content"] == "When did the Berlin Wall fall?":
            assert "9 November 1989" not in system["content"]


def test_exclude_leaves_out_every_article_of_another_file(tmp_path, embedder):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD))
    berlin = tmp_path / "berlin.json"
    berlin.write_text(json.dumps({"version": "v2.0", "data": [SQUAD["data"][1]]}))
    out = tmp_path / "grounded.jsonl"
    hearth("data", "grounded-sft", "--squad", squad, "--out", out, "--exclude", berlin, "--gold-removed-share", "0")
    text = out.read_text()
    assert "Berlin" not in text and "Paris" in text
    bad = hearth("data", "grounded-sft", "--squad", squad, "--out", out, "--exclude", squad, check=False)
    assert bad.returncode == 1 and "every article" in bad.stderr


def test_min_sources_varies_the_number_of_sources_within_the_range(tmp_path, embedder):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD))
    out = tmp_path / "grounded.jsonl"
    hearth("data", "grounded-sft", "--squad", squad, "--out", out, "--gold-removed-share", "0", "-k", "3",
           "--min-sources", "1", "--seed", "3")
    counts = [m[0]["content"].count("Document [") for m in examples(out)]
    assert set(counts) <= {1, 2, 3} and len(set(counts)) > 1
    bad = hearth("data", "grounded-sft", "--squad", squad, "--out", out, "-k", "2", "--min-sources", "3", check=False)
    assert bad.returncode == 1 and "--min-sources" in bad.stderr


class Draws:
    """A random.Random stand-in: random() gives `draw`, choice() the first item."""

    def __init__(self, draw):
        self.draw = draw

    def random(self):
        return self.draw

    def choice(self, items):
        return items[0]


def test_perturbed_questions_swap_a_name_the_paragraph_lacks_or_negate_the_verb():
    from finetune.grounded_data import SWAP_SHARE, article_entities, perturbed

    paragraph = "Berlin is the capital of Germany. The Berlin Wall fell on 9 November 1989."
    entities = article_entities([("Berlin", paragraph), ("Berlin", "Munich lies in Bavaria, far from the Baltic Sea.")])
    # names and numbers that do not open a sentence, multi-word names whole
    assert entities["Berlin"] == ["Germany", "Berlin Wall", "9", "November", "1989", "Bavaria", "Baltic Sea"]
    question = "When did the Berlin Wall fall?"
    assert perturbed(question, paragraph, entities["Berlin"], Draws(0.0)) == ("When did the Bavaria fall?", "Bavaria")
    assert perturbed(question, paragraph, entities["Berlin"], Draws(SWAP_SHARE)) == ("When didn't the Berlin Wall fall?",
                                                                                    None)
    # a number is swapped for a number
    assert perturbed("What happened in 1989?", paragraph, ["Bavaria", "1961"], Draws(0.0)) == ("What happened in 1961?",
                                                                                               "1961")
    # nothing to swap and no auxiliary verb to negate
    assert perturbed("Who wrote it?", paragraph, entities["Berlin"], Draws(0.0)) is None


def test_perturbed_share_turns_answerable_questions_into_refusals(tmp_path, embedder):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD))
    out = tmp_path / "grounded.jsonl"
    counts = json.loads(hearth("data", "grounded-sft", "--squad", squad, "--out", out, "--gold-removed-share", "0",
                               "--perturbed-share", "1", "-k", "2", "--json").stdout)
    assert counts["answerable"] == 0 and counts["unanswerable_squad2"] == 2
    perturbed = counts["unanswerable_perturbed"]
    assert perturbed + sum(counts["skipped"].values()) == 3 and perturbed >= 1
    originals = {q["question"] for article in SQUAD["data"] for p in article["paragraphs"] for q in p["qas"]}
    changed = [m for m in examples(out) if m[1]["content"] not in originals]
    assert len(changed) == perturbed and all(m[2]["content"] == rag.ABSTAIN for m in changed)
    bad = hearth("data", "grounded-sft", "--squad", squad, "--out", out, "--gold-removed-share", "0.5",
                 "--perturbed-share", "0.6", check=False)
    assert bad.returncode == 1 and "--perturbed-share" in bad.stderr
