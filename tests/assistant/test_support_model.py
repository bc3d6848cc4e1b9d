"""The support model: windows over sources, the shipped weights, training and evaluating it as a user does."""

import csv
import json

import numpy as np
import pytest

from assistant.grounding.support import Window, sentence_spans, top_windows, window_at
from tests.helpers import hearth
from tests.test_cli_grounding import summac_fixture

SOURCES = ["The Rhine flows 1,230 km. It starts in the Alps. It ends in the North Sea. Basel is on it.",
           "Cats sleep a lot."]


def test_windows_are_a_sentence_and_its_neighbours_in_the_same_source():
    spans = sentence_spans(SOURCES)
    assert spans == [(0, 0, 25), (0, 26, 48), (0, 49, 74), (0, 75, 90), (1, 0, 17)]
    assert window_at(spans, 0) == Window(0, 0, 48, (0, 25))
    assert window_at(spans, 2) == Window(0, 26, 90, (49, 74))
    assert window_at(spans, 3) == Window(0, 49, 90, (75, 90))  # the next sentence is another source's
    assert window_at(spans, 4) == Window(1, 0, 17, (0, 17))
    ranked = top_windows(np.array([0.1, 0.2, 0.9, 0.3, 0.8]), spans)
    assert [w.centre for w in ranked] == [(49, 74), (0, 17), (75, 90)]


# Written by hand before the shipped model was trained: (claim, source, supported).
PAIRS = [
    ("The museum is closed on Mondays.",
     "The city museum opens every day except Monday, when it is closed for cleaning.", True),
    ("The museum is closed on Fridays.",
     "The city museum opens every day except Monday, when it is closed for cleaning.", False),
    ("Marie Curie won two Nobel Prizes.",
     "Marie Curie was awarded the Nobel Prize in Physics in 1903 and the Nobel Prize in Chemistry in 1911.", True),
    ("Marie Curie won the Nobel Prize in Literature.",
     "Marie Curie was awarded the Nobel Prize in Physics in 1903 and the Nobel Prize in Chemistry in 1911.", False),
    ("The company was founded by Anna Berg in 1998.",
     "Anna Berg founded the company in 1998 after leaving her job at a bank.", True),
    ("The company was founded by Anna Berg in 2005.",
     "Anna Berg founded the company in 1998 after leaving her job at a bank.", False),
    ("The train to Lyon leaves at 8:15.",
     "Departures: the morning train to Lyon leaves platform 4 at 8:15.", True),
    ("The train to Lyon leaves at 9:45.",
     "Departures: the morning train to Lyon leaves platform 4 at 8:15.", False),
]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the shipped model gets 5 of these 8 right: it doubts 'two Nobel Prizes' "
                                       "and the restated 1998 founding, and passes the Fridays claim (see "
                                       "docs/BENCHMARKS.md); remove this mark when a better model ships")
def test_shipped_support_model_scores_hand_written_pairs():
    from assistant.grounding.support import shipped_model

    model = shipped_model()
    p = model.probabilities([c for c, _, _ in PAIRS], [s for _, s, _ in PAIRS])
    assert [bool(v >= 0.5) for v in p] == [label for _, _, label in PAIRS], p.round(3).tolist()


@pytest.mark.slow
def test_shipped_support_model_reads_claim_and_passage_together():
    from assistant.grounding.support import shipped_model

    sources = [s for _, s, label in PAIRS if label][::2] + [PAIRS[6][1]]
    restated = ["The city museum is closed on Mondays for cleaning.", "Anna Berg founded the company in 1998.",
                "The morning train to Lyon leaves platform 4 at 8:15."]
    unrelated = ["Penguins cannot fly but swim very fast.", "The recipe needs two cups of flour.",
                 "Jupiter is the largest planet."]
    model = shipped_model()
    same, other = model.probabilities(restated, sources), model.probabilities(unrelated, sources)
    assert min(same) > max(other) and max(other) < 0.5, (same, other)


@pytest.mark.slow
def test_a_runaway_claim_longer_than_the_model_reads_is_cut_not_refused():
    from assistant.grounding.support import MAX_LEN, encode_pairs, shipped_model

    model = shipped_model()
    runaway = " ".join(f"firehose: [{i}]." for i in range(200))  # a looping answer, ~1,000 tokens
    short = "The city museum is closed on Mondays."
    batch = encode_pairs(model.tokenizer, [runaway, short], [PAIRS[0][1]] * 2)
    assert batch["input_ids"].shape[1] <= MAX_LEN
    passage = model.tokenizer(PAIRS[0][1], add_special_tokens=False)["input_ids"]
    cut = [i for i in batch["input_ids"][0].tolist() if i != model.tokenizer.pad_token_id]
    assert cut[-len(passage) - 1 : -1] == passage  # the runaway claim was cut, its passage kept whole
    assert len(cut) - len(passage) - 3 <= MAX_LEN // 2 + 4
    whole = model.tokenizer(short, PAIRS[0][1])["input_ids"]  # a short claim and passage are read whole
    assert batch["input_ids"][1, : len(whole)].tolist() == whole
    p = model.probabilities([runaway], [PAIRS[0][1]])
    assert p.shape == (1,) and 0.0 <= p[0] <= 1.0


def _true_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "grounding", "generated_text", "label"])
        writer.writerows([i, g, t, int(y)] for i, (t, g, y) in enumerate(rows))
    return path


@pytest.mark.slow
def test_train_support_trains_resumes_and_excludes(tmp_path, hearth_home):
    folder = summac_fixture(tmp_path / "summac")
    rows = PAIRS * 3  # three copies: the same sources, so the same groups, split together
    paws = _true_csv(tmp_path / "pairs.csv", [(c, s + f" Note {i // len(PAIRS)}.", y) for i, (c, s, y) in enumerate(rows)])
    out = tmp_path / "model"
    first = json.loads(hearth("train", "support", "--data", str(folder / "claims.jsonl"), str(paws), "--out", str(out),
                              "--max-steps", "2", "--eval-every", "1", "--batch-size", "4", "--json",
                              home=hearth_home).stdout)
    assert first["steps"] == 2 and first["pairs"]["train"] > 0 and first["pairs"]["val"] > 0
    assert 0 <= first["val_accuracy"] <= 1
    assert {p.name for p in out.iterdir()} >= {"support.safetensors", "support.json", "trainer_state.json"}
    resumed = json.loads(hearth("train", "support", "--data", str(folder / "claims.jsonl"), str(paws), "--resume",
                                str(out), "--max-steps", "3", "--json", home=hearth_home).stdout)
    assert resumed["steps"] == 3

    from assistant.grounding.support import SupportModel

    model = SupportModel(out)  # what training wrote loads as a model
    assert model.probabilities(["a claim"], ["a passage"]).shape == (1,)

    proc = hearth("train", "support", "--data", str(folder / "claims.jsonl"), "--exclude", str(folder / "claims.jsonl"),
                  "--out", str(tmp_path / "none"), home=hearth_home, check=False)
    assert proc.returncode == 1 and "not both labels" in proc.stderr


@pytest.mark.slow
def test_eval_grounding_support_signal_alone(tmp_path, hearth_home):
    folder = summac_fixture(tmp_path / "summac")
    out = json.loads(hearth("eval", "grounding", "--data", str(folder / "test_claims.jsonl"), "--format", "summac",
                            "--signal", "support", "--json", home=hearth_home).stdout)
    assert out["signal"] == "support" and out["n"] == 8 and out["threshold_chosen_on"] == 8
    assert out["auroc"] > 0.5 and 0.5 <= out["balanced_accuracy"] <= 1
    proc = hearth("eval", "grounding", "--data", str(folder / "test_claims.jsonl"), "--format", "summac",
                  "--signal", "support", "--shipped", home=hearth_home, check=False)
    assert proc.returncode == 1 and "--signal support" in proc.stderr
