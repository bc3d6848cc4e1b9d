"""The hallucination check: splitting, each signal on hand-made cases, calibration, the whole check."""

import json

import numpy as np
import pytest

from assistant.grounding import check, lexical, model_evidence, semantic
from assistant.grounding.calibration import (SENTENCE_FEATURES, Calibration, LogisticModel, answer_feature_names,
                                             answer_features, for_kind, load_calibrations, save_calibrations)
from assistant.grounding.check import default_scorer, is_verifiable
from assistant.grounding.split import split_sentences

SOURCE = ("The Rhine is 1,230 kilometres long. It rises in the Swiss Alps and flows into the North Sea "
          "near Rotterdam. Konrad Adenauer was born in Cologne, a city on the Rhine.")


def pieces(text):
    return [text[a:b] for a, b in split_sentences(text)]


# -- sentence splitting --------------------------------------------------------------------------
def test_abbreviations_decimals_and_initials_do_not_end_sentences():
    text = "Dr. Smith paid $3.50 on Jan. 5. He left, e.g. at noon! J. R. R. Tolkien wrote it in 1937. Did he?"
    assert pieces(text) == ["Dr. Smith paid $3.50 on Jan. 5.", "He left, e.g. at noon!",
                            "J. R. R. Tolkien wrote it in 1937.", "Did he?"]


def test_cjk_punctuation_ends_sentences():
    assert pieces("东京是日本的首都。人口很多！对吗？") == ["东京是日本的首都。", "人口很多！", "对吗？"]


def test_code_spans_and_blocks_are_never_split():
    text = "Call `os.path.join(a, b)`. It joins paths.\n\n```python\nx = 1. \ny = 2\n```\nDone."
    assert pieces(text) == ["Call `os.path.join(a, b)`.", "It joins paths.", "```python\nx = 1. \ny = 2\n```", "Done."]


def test_list_items_are_sentences_and_spans_are_exact():
    text = "- First item. Second.\n- Another one\n2. Numbered"
    assert pieces(text) == ["First item.", "Second.", "Another one", "Numbered"]
    for a, b in split_sentences(text):
        assert text[a:b] == text[a:b].strip()


# -- lexical signals -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def index():
    return lexical.SourceIndex([SOURCE])


def test_faithful_sentence_is_fully_covered(index):
    f = lexical.lexical_features("The Rhine flows into the North Sea near Rotterdam.", index)
    assert f["coverage"] == 1.0 and f["missing_numbers"] == 0 and f["missing_names"] == 0


def test_changed_number_is_missing(index):
    assert lexical.lexical_features("The Rhine is 1,230 kilometres long.", index)["missing_numbers"] == 0
    assert lexical.lexical_features("The Rhine is 1,450 kilometres long.", index)["missing_numbers"] == 1


def test_spelled_out_numbers_are_numbers():
    src = lexical.SourceIndex(["Rufus eats twice a day. We have two cats and twenty-five hens."])
    assert lexical.lexical_features("He eats three times a day.", src)["missing_numbers"] == 1
    assert lexical.lexical_features("He eats 2 times a day.", src)["missing_numbers"] == 0
    assert lexical.lexical_features("There are 25 hens and 2 cats.", src)["missing_numbers"] == 0
    assert lexical.lexical_features("There are twenty-six hens.", src)["missing_numbers"] == 1
    assert lexical.numbers("three hundred people, one of them, no one, a dozen eggs") == {"300", "12"}


def test_swapped_name_is_missing(index):
    assert lexical.lexical_features("Konrad Adenauer was born in Cologne.", index)["missing_names"] == 0
    assert lexical.lexical_features("Konrad Adenauer was born in Munich.", index)["missing_names"] == 1


def test_added_claim_lowers_coverage(index):
    plain = lexical.lexical_features("The Rhine rises in the Swiss Alps.", index)
    added = lexical.lexical_features("The Rhine rises in the Swiss Alps and is famous for its wine festivals.", index)
    assert plain["coverage"] == 1.0 and added["coverage"] < 0.75 and added["missing_terms"] > plain["missing_terms"]


def test_identifiers_and_quotes_must_appear_verbatim():
    src = lexical.SourceIndex(["Call `os.path.join` to join paths. The error reads \"file not found\"."])
    assert lexical.lexical_features("Use os.path.join here.", src)["missing_identifiers"] == 0
    assert lexical.lexical_features("Use os.path.joinpath here.", src)["missing_identifiers"] == 1
    assert lexical.lexical_features("It says \"permission denied\".", src)["missing_identifiers"] == 1


def test_asserting_what_the_source_negates_is_a_conflict():
    src = lexical.SourceIndex(['{"OutdoorSeating": false, "WiFi": "free"}', "The cafe has no parking."])
    assert lexical.lexical_features("It offers outdoor seating.", src)["conflicts"] == 2
    assert lexical.lexical_features("There is no outdoor seating.", src)["conflicts"] == 0
    assert lexical.lexical_features("Parking is easy.", src)["conflicts"] == 1
    assert lexical.lexical_features("WiFi is free.", src)["conflicts"] == 0


def test_chinese_text_is_matched_by_character_bigrams():
    src = lexical.SourceIndex(["东京是日本的首都，人口约一千四百万。"])
    assert lexical.lexical_features("东京是日本的首都。", src)["coverage"] == 1.0
    assert lexical.lexical_features("大阪是日本的首都。", src)["coverage"] < 1.0


def test_refusals_greetings_and_code_are_unverifiable():
    assert not is_verifiable("I don't know based on the documents.")
    assert not is_verifiable("Thanks!")
    assert not is_verifiable("```\nls -la\n```")
    assert is_verifiable("The Rhine is 1,230 kilometres long. [1]")


# -- semantic signal -----------------------------------------------------------------------------
def test_paraphrase_is_closer_than_an_unrelated_claim(embedder):
    cos, owners = semantic.similarities(
        embedder, ["The river empties into the North Sea close to Rotterdam.", "Bananas are rich in potassium."],
        [SOURCE])
    para, other = semantic.semantic_features(cos[0]), semantic.semantic_features(cos[1])
    assert para["cosine_best"] > 0.6 > 0.3 > other["cosine_best"]
    assert semantic.best_sources(cos[0], owners) == [0]


# -- model signal ----------------------------------------------------------------------------------
def test_sources_raise_copied_tokens_more_than_fabricated_ones(smollm2_dir, index):
    scorer = default_scorer()
    answer = "Konrad Adenauer was born in Cologne. Konrad Adenauer was born in Leipzig."
    evidence = scorer.score(answer, [SOURCE], "Where was Konrad Adenauer born?")
    (a1, b1), (a2, b2) = split_sentences(answer)
    faithful, made_up = evidence.features(a1, b1, answer, index), evidence.features(a2, b2, answer, index)
    assert set(faithful) == set(model_evidence.FEATURES)
    assert faithful["logprob_mean"] > made_up["logprob_mean"]
    assert faithful["word_gain_min"] > made_up["word_gain_min"]
    assert faithful["novel_surprise"] == 0.0 < made_up["novel_surprise"]  # only "Leipzig" is not in the source
    assert evidence.features(len(answer) + 5, len(answer) + 9, answer, index) is None


# -- calibration -----------------------------------------------------------------------------------
def test_logistic_model_learns_the_direction_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(SENTENCE_FEATURES)))
    y = x[:, 0] < 0  # hallucinated when coverage is low
    answers = [x[i : i + 4] for i in range(0, 400, 4)]
    calibration = Calibration.fit(x, y, answers, [a[:, 0].mean() < 0 for a in answers], "synthetic")
    assert calibration.sentence_support(np.array([[2.0] + [0.0] * (x.shape[1] - 1)]))[0] > 0.9
    assert calibration.sentence_support(np.array([[-2.0] + [0.0] * (x.shape[1] - 1)]))[0] < 0.1
    path = tmp_path / "weights.json"
    save_calibrations({"general": calibration}, path)
    again = load_calibrations(path)["general"]
    assert again.answer_support(answers[0]) == pytest.approx(calibration.answer_support(answers[0]))
    data = json.loads(path.read_text())
    data["general"]["sentence"]["features"] = data["general"]["sentence"]["features"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="refit"):
        load_calibrations(path)
    with pytest.raises(ValueError, match="general"):
        save_calibrations({"question": calibration}, path)


def test_a_kind_without_its_own_calibration_gets_the_general_one():
    shipped = load_calibrations()
    general_only = {"general": shipped["general"]}
    assert for_kind(general_only, "summary") is shipped["general"]
    assert for_kind(shipped, "question") is shipped["question"]
    with pytest.raises(ValueError, match="unknown kind"):
        for_kind(shipped, "poem")


def test_shipped_weights_cover_every_signal_and_kind():
    shipped = load_calibrations()
    assert set(shipped) == {"general", "question", "summary", "data"}
    for calibration in shipped.values():
        assert set(calibration.sentence.features) <= set(SENTENCE_FEATURES)
        assert tuple(calibration.answer.features) == answer_feature_names(calibration.sentence.features)
        assert 0 < calibration.answer_threshold < 1 and calibration.fitted_on
        assert isinstance(calibration.sentence, LogisticModel)


def test_fitting_gives_a_kind_its_own_calibration_only_with_enough_labels(tmp_path):
    from assistant.bench.grounding import Example, Scored, fit, predict

    rng = np.random.default_rng(1)

    def scored(task, n, positives):
        out = []
        for i in range(n):
            bad = i < positives
            rows = rng.normal(size=(2, len(SENTENCE_FEATURES))) + (-1.0 if bad else 1.0)
            out.append(Scored(Example(f"{task}{i}", f"{task}{i}", task, "", ["src"], "answer", bad, []),
                              rows, np.array([bad, bad])))
        return out

    labelled = scored("QA", 60, 25) + scored("Summary", 60, 5)
    calibrations = fit(labelled, "synthetic")
    assert set(calibrations) == {"general", "question"}  # Summary has 5 hallucinated answers: too few
    answer_p, _ = predict(calibrations, labelled)
    summary = labelled[60]
    assert answer_p[60] == pytest.approx(1 - calibrations["general"].answer_support(summary.rows))
    assert answer_p[0] == pytest.approx(1 - calibrations["question"].answer_support(labelled[0].rows))
    # a kind's support is the mean of its own models' and the general ones', and survives a round trip
    question, rows = calibrations["question"], labelled[0].rows
    own = 1 - question.answer.probability(answer_features(rows)[None, :])[0]
    assert question.base is calibrations["general"]
    assert question.answer_support(rows) == pytest.approx((own + calibrations["general"].answer_support(rows)) / 2)
    path = tmp_path / "weights.json"
    save_calibrations(calibrations, path)
    loaded = load_calibrations(path)
    assert loaded["question"].base is loaded["general"] and loaded["general"].base is None
    assert loaded["question"].answer_support(rows) == pytest.approx(question.answer_support(rows))
    assert list(loaded["question"].sentence_support(rows)) == pytest.approx(list(question.sentence_support(rows)))


# -- the whole check -------------------------------------------------------------------------------
def test_check_flags_the_fabricated_sentence_and_keeps_the_faithful_one(embedder):
    sources = [(7, SOURCE), (9, "Bananas are a good source of potassium and grow in the tropics.")]
    answer = ("The Rhine flows into the North Sea near Rotterdam [1]. "
              "It was first mapped in 1642 by the Dutch explorer Willem Brakel. "
              "I don't know based on the documents.")
    result = check(answer, sources, embedder, question="Where does the Rhine end?")
    faithful, fabricated, refusal = result.sentences
    assert (faithful.verdict, fabricated.verdict, refusal.verdict) == ("supported", "unsupported", "unverifiable")
    assert faithful.score > fabricated.score and faithful.evidence[0] == 7
    assert 0 <= result.score <= 1
    for s in result.sentences:
        assert answer[s.start : s.end] == s.text


def test_checks_json_shape(embedder):
    result = check("The Rhine is 1,230 kilometres long.", [(3, SOURCE)], embedder).to_dict()
    assert set(result) == {"score", "threshold", "support", "relevance", "consistency", "sentences"}
    assert result["consistency"] is None  # measured only with re-sampled answers (self-check)
    (sentence,) = result["sentences"]
    assert set(sentence) == {"text", "start", "end", "score", "verdict", "evidence", "receipt"}
    assert sentence["evidence"] == [3] and sentence["verdict"] in ("supported", "unsupported")
    assert set(sentence["receipt"]) == {"chunk", "start", "end", "text", "support"}
    assert sentence["receipt"]["chunk"] == 3 and 0 <= sentence["receipt"]["support"] <= 1
    assert SOURCE[sentence["receipt"]["start"] : sentence["receipt"]["end"]].strip() == sentence["receipt"]["text"]
    json.dumps(result)


def test_nothing_to_check_scores_none(embedder):
    assert check("", [(1, SOURCE)], embedder).score is None
    only_refusal = check("I don't know based on the documents.", [(1, SOURCE)], embedder)
    assert only_refusal.score is None and only_refusal.sentences[0].verdict == "unverifiable"


def test_self_consistency_rewards_what_the_samples_repeat(embedder):
    from assistant.grounding.consistency import consistency

    samples = ["Miso was born in 2019. She likes tuna.", "Born in 2019, Miso loves tuna.",
               "Miso, born 2019, eats tuna every day."]
    repeated, once = consistency(["Miso was born in 2019.", "Miso won a singing contest in Vienna."], samples, embedder)
    assert repeated > 0.7 and once < 0.45
    assert list(consistency(["Anything."], [], embedder)) == [1.0]


def test_self_check_on_a_grounded_answer_keeps_its_relevance_and_reports_agreement(embedder):
    # a pronoun answer's relevance reads the sentence before its evidence in the sources; with samples
    # given, the check once passed the answer's own sentences there instead (a crash, or a wrong context)
    note = "Our cat is called Miso. She sleeps on the windowsill in the kitchen. The compost heap is turned weekly."
    answer, question = "She sleeps on the windowsill in the kitchen [1].", "Where does Miso sleep?"
    samples = ["She sleeps on the kitchen windowsill [1].", "I don't know based on the documents."]
    alone = check(answer, [(4, note)], embedder, question=question, kind="question")
    sampled = check(answer, [(4, note)], embedder, question=question, kind="question", samples=samples)
    assert sampled.relevance == alone.relevance and alone.relevance["question_coverage"] == 1.0
    assert alone.consistency is None and 0 < sampled.consistency < 1


def test_an_answer_below_the_threshold_always_marks_a_sentence(embedder):
    from dataclasses import replace

    strict = replace(load_calibrations()["general"], answer_threshold=0.999, sentence_threshold=0.0)  # every sentence passes
    result = check("The cat is a food for the cat. Cats are animals.", [(1, "Our cat Miso likes tuna.")], embedder,
                   question="What does Miso like to eat?", calibration=strict)
    assert result.score < result.threshold and not result.supported
    flagged = [s for s in result.sentences if s.verdict == "unsupported"]
    assert flagged and min(s.score for s in result.sentences) == flagged[0].score


def test_a_calibration_reads_only_the_signals_it_was_fitted_on():
    from assistant.grounding.calibration import WITHOUT_SUPPORT

    rng = np.random.default_rng(2)
    best = SENTENCE_FEATURES.index("support_best")
    x = rng.normal(size=(400, len(SENTENCE_FEATURES)))
    y = x[:, best] < 0  # only the support model knows
    answers, answer_y = [x[i : i + 4] for i in range(0, 400, 4)], [x[i : i + 4, best].min() < 0 for i in range(0, 400, 4)]
    with_support = Calibration.fit(x, y, answers, answer_y)
    without = Calibration.fit(x, y, answers, answer_y, features=WITHOUT_SUPPORT)
    assert "support_best" in with_support.sentence.features and "support_best" not in without.sentence.features
    high, low = x[:1].copy(), x[:1].copy()
    high[0, best], low[0, best] = 3.0, -3.0
    assert with_support.sentence_support(high)[0] > 0.9 > 0.1 > with_support.sentence_support(low)[0]
    assert without.sentence_support(high)[0] == without.sentence_support(low)[0]
    # weights fitted before the support signals (the shipped ones) ignore those columns
    shipped = load_calibrations()["general"]
    assert shipped.sentence_support(high)[0] == shipped.sentence_support(low)[0]
    assert shipped.answer_support(high) == shipped.answer_support(low)


def test_a_sources_sentence_vectors_are_embedded_once(embedder):
    class Counting:
        def __init__(self, inner):
            self.inner, self.texts = inner, 0

        def encode(self, texts):
            self.texts += len(texts)
            return self.inner.encode(texts)

    counting = Counting(embedder)
    claims = ["The river empties into the North Sea close to Rotterdam.", "Bananas are rich in potassium."]
    first, owners = semantic.similarities(counting, claims, [SOURCE, "Bananas are yellow."])
    embedded = counting.texts
    again, owners_again = semantic.similarities(counting, claims[:1], [SOURCE, "Bananas are yellow."])
    assert counting.texts == embedded + 1  # only the claim: both sources' sentences came from the cache
    np.testing.assert_allclose(again[0], first[0], atol=1e-5)
    assert owners_again.tolist() == owners.tolist()
