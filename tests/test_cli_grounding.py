"""`hearth check` and `hearth eval grounding`, run as a user runs them."""

import json

import pytest

from tests.helpers import hearth

SOURCE = "The Rhine is 1,230 kilometres long. It flows into the North Sea near Rotterdam.\n"


def test_check_json_against_source_files(tmp_path, hearth_home):
    (tmp_path / "rhine.md").write_text(SOURCE)
    (tmp_path / "other.txt").write_text("Bananas grow in the tropics.\n")
    answer = "The Rhine is 1,230 kilometres long. It was dug by Roman engineers in 312 BC."
    out = hearth("check", "--sources", str(tmp_path / "rhine.md"), str(tmp_path / "other.txt"), "--answer", "-",
                 "--json", stdin=answer, home=hearth_home).stdout
    data = json.loads(out)
    assert set(data) == {"score", "threshold", "support", "relevance", "consistency", "sentences"}
    assert data["relevance"] is None and data["score"] == data["support"]  # no question: the support alone
    first, second = data["sentences"]
    assert (first["text"], first["start"], first["end"]) == ("The Rhine is 1,230 kilometres long.", 0, 35)
    assert first["verdict"] == "supported" and first["evidence"][0] == 1
    assert second["verdict"] == "unsupported" and second["score"] < first["score"]
    # the receipt: the source sentence the support model read the sentence against, and where it is
    receipt = first["receipt"]
    assert (receipt["chunk"], receipt["path"], receipt["line"]) == (1, str(tmp_path / "rhine.md"), 1)
    assert (receipt["text"], receipt["start"], receipt["end"]) == ("The Rhine is 1,230 kilometres long.", 0, 35)
    assert receipt["support"] > second["receipt"]["support"]
    # asked as an answer to a question, the check also reads whether it addresses the question
    asked = json.loads(hearth("check", "--sources", str(tmp_path / "rhine.md"), "--answer", "The Rhine is 1,230 "
                              "kilometres long.", "--question", "How long is the Rhine?", "--kind", "question",
                              "--json", home=hearth_home).stdout)
    assert asked["relevance"]["question_coverage"] == 1.0 and asked["score"] <= asked["support"]


def test_check_plain_output_marks_unsupported(tmp_path, hearth_home):
    (tmp_path / "rhine.md").write_text(SOURCE)
    out = hearth("check", "--sources", str(tmp_path / "rhine.md"), "--answer",
                 "The Rhine flows into the North Sea. Napoleon swam across it in 1805.", home=hearth_home).stdout
    lines = out.splitlines()
    assert lines[0].startswith("ok ") and lines[2].startswith("\u26a0")
    assert lines[1].strip().startswith(f"\u2190 {tmp_path / 'rhine.md'} line 1: \u201cIt flows into the North Sea")
    assert "answer support" in out


def test_check_kind_picks_the_calibration(tmp_path, hearth_home):
    from assistant.grounding.check import shipped_calibration

    (tmp_path / "rhine.md").write_text(SOURCE)
    answer = "The Rhine flows into the North Sea."
    thresholds = {}
    for kind in ("data", "summary"):
        out = hearth("check", "--sources", str(tmp_path / "rhine.md"), "--answer", answer, "--kind", kind,
                     home=hearth_home).stdout
        thresholds[kind] = out.rsplit("threshold ", 1)[1].split(")")[0]
        assert thresholds[kind] == f"{shipped_calibration(kind).answer_threshold:.2f}"
    assert thresholds["data"] != thresholds["summary"]
    proc = hearth("check", "--sources", str(tmp_path / "rhine.md"), "--answer", answer, "--kind", "poem",
                  home=hearth_home, check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_check_reports_a_missing_source(tmp_path, hearth_home):
    proc = hearth("check", "--sources", str(tmp_path / "nope.md"), "--answer", "Hi there, it is 5.",
                  home=hearth_home, check=False)
    assert proc.returncode == 1 and "nope.md" in proc.stderr and "Traceback" not in proc.stderr


def ragtruth_fixture(path):
    """Six sources, each with a faithful and a fabricated response, over the three task types."""
    facts = [("Lake Baikal holds 23,600 cubic kilometres of water.", "Lake Baikal holds 41,000 cubic kilometres "
              "of water and was named by Marco Polo."),
             ("The bakery opens at 7 am and sells rye bread.", "The bakery opens at 5 am, sells croissants and "
              "has a rooftop terrace."),
             ("Ada Lovelace wrote the first published algorithm.", "Ada Lovelace built the first electronic "
              "computer in Geneva in 1901."),
             ("The bridge is 2.7 km long and opened in 1937.", "The bridge is 4.1 km long and opened in 1962 "
              "after a Soviet design."),
             ("Tomatoes need six hours of sun.", "Tomatoes need twelve hours of sun and grow best in Iceland."),
             ("The museum is closed on Mondays.", "The museum is closed on Fridays and entry costs 40 euros.")]
    tasks = ["QA", "QA", "Summary", "Summary", "Data2txt", "Data2txt"]
    rows = []
    for i, ((good, bad), task) in enumerate(zip(facts, tasks)):
        source = f"{good} Visitors often ask about it. It is well known in the region."
        info = {"question": "Tell me about it.", "passages": source} if task == "QA" else \
            (source if task == "Summary" else {"name": "Place", "description": source})
        for j, (response, made_up) in enumerate(((good, False), (bad, True))):
            start = response.index(" ") + 1
            labels = [{"start": start, "end": len(response), "text": response[start:]}] if made_up else []
            rows.append({"id": 2 * i + j, "source_id": 100 + i, "task_type": task, "source_info": info,
                         "response": response, "labels": labels})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_eval_grounding_ragtruth_json(tmp_path, hearth_home):
    data = ragtruth_fixture(tmp_path / "rt.jsonl")
    out = json.loads(hearth("eval", "grounding", "--data", str(data), "--format", "ragtruth", "--json",
                            home=hearth_home).stdout)
    assert set(out) == {"format", "n", "auroc", "auroc_by_task", "auroc_task_mean", "precision", "recall", "f1",
                        "threshold", "span_auroc"}
    assert out["format"] == "ragtruth" and out["n"] == 12
    assert set(out["auroc_by_task"]) == {"QA", "Summary", "Data2txt"}
    assert out["auroc"] > 0.5 and out["span_auroc"] > 0.5  # fabricated numbers and names are easy
    assert (hearth_home / "cache" / "grounding").is_dir()  # signals cached for the next run


def test_eval_grounding_wice_needs_its_dev_file(tmp_path, hearth_home):
    (tmp_path / "claim_test.jsonl").write_text("")
    proc = hearth("eval", "grounding", "--data", str(tmp_path / "claim_test.jsonl"), "--format", "wice",
                  home=hearth_home, check=False)
    assert proc.returncode == 1 and "claim_dev.jsonl" in proc.stderr


def summac_fixture(folder):
    """A SummaC-style folder: documents, validation claims (claims.jsonl) and test claims."""
    facts = [("Lake Baikal holds 23,600 cubic kilometres of water.", "Lake Baikal holds 41,000 cubic kilometres "
              "of water and was named by Marco Polo."),
             ("The bakery opens at 7 am and sells rye bread.", "The bakery opens at 5 am and has a rooftop terrace."),
             ("Ada Lovelace wrote the first published algorithm.", "Ada Lovelace built an electronic computer in 1901."),
             ("The bridge is 2.7 km long and opened in 1937.", "The bridge is 4.1 km long and opened in 1962."),
             ("Tomatoes need six hours of sun.", "Tomatoes need twelve hours of sun and grow best in Iceland."),
             ("The museum is closed on Mondays.", "The museum is closed on Fridays and entry costs 40 euros.")]
    documents, claims = [], []
    for i, (good, bad) in enumerate(facts):
        documents.append({"doc_id": f"d{i}", "document": f"{good} Visitors often ask about it. It is well known."})
        claims += [{"dataset": "cogensumm", "label": 1, "claim": good, "doc_id": f"d{i}"},
                   {"dataset": "cogensumm", "label": 0, "claim": bad, "doc_id": f"d{i}"}]
    folder.mkdir()
    (folder / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
    (folder / "claims.jsonl").write_text("".join(json.dumps(c) + "\n" for c in claims[:8]))
    (folder / "test_claims.jsonl").write_text("".join(json.dumps(c) + "\n" for c in claims[4:]))
    return folder


@pytest.mark.slow
def test_eval_grounding_summac_reports_balanced_accuracy(tmp_path, hearth_home):
    folder = summac_fixture(tmp_path / "summac")
    out = json.loads(hearth("eval", "grounding", "--data", str(folder / "test_claims.jsonl"), "--format", "summac",
                            "--json", home=hearth_home).stdout)
    assert out["format"] == "summac" and out["n"] == 8 and out["fitted_on"] == 8
    assert 0 <= out["balanced_accuracy"] <= 1 and out["auroc"] > 0.5
    proc = hearth("eval", "grounding", "--data", str(folder / "claims.jsonl"), "--format", "summac",
                  home=hearth_home, check=False)
    assert proc.returncode == 1 and "fitting set" in proc.stderr


def _labelled_history(home):
    """A chat history in HEARTH_HOME with grounded replies checked by the real check, some of whose
    sentence verdicts the user labelled (as `/verdict N right|wrong` in the chat does)."""
    from assistant import grounding
    from assistant.grounding import feedback
    from assistant.records import Conversation, Message
    from assistant.store import Store
    from retrieval.embedder import shared_embedder

    store = Store(home / "hearth.db")
    conv = store.create_conversation(Conversation(title="rivers", system_prompt=""))
    replies = [("How long is the Rhine?", "The Rhine is 1,230 kilometres long. It was dug by Roman engineers.", [1, 2]),
               ("Where does it end?", "It flows into the North Sea near Rotterdam.", [1]),
               ("Who swam it?", "Napoleon swam across the Rhine in 1805.", [1])]
    for question, answer, numbers in replies:
        store.add_message(conv.id, Message(role="user", content=question))
        checks = grounding.check(answer, [(1, SOURCE)], shared_embedder(), question=question, kind="question")
        reply = store.add_message(conv.id, Message(
            role="assistant", content=answer, status="stop", checks=checks.to_dict(),
            sources=[{"rank": 1, "path": "rhine.md", "line": 1, "text": SOURCE, "chunk_id": 1}]))
        for n in numbers:  # the user's truth: only what the source says is supported
            sentence = feedback.checked_sentences(reply.checks)[n - 1]
            feedback.mark(reply.checks, n, right=(sentence["verdict"] == "supported") == (sentence["text"] in SOURCE))
        store.update_checks(reply.id, reply.checks)
    store.close()


@pytest.mark.slow
def test_feedback_labels_are_scored_and_refit_a_calibration_of_your_own(tmp_path, hearth_home, caplog):
    proc = hearth("eval", "grounding", "--feedback", home=hearth_home, check=False)
    assert proc.returncode == 1 and "/verdict N right|wrong" in proc.stderr
    _labelled_history(hearth_home)
    out = json.loads(hearth("eval", "grounding", "--feedback", "--json", home=hearth_home).stdout)
    assert (out["replies"], out["sentences"], out["unsupported"]) == (3, 4, 2)
    assert (out["answers"], out["answers_hallucinated"]) == (3, 2)
    assert "yours" not in out and out["shipped"]["fitted_on"].startswith("RAGTruth")
    assert 0 <= out["shipped"]["sentence_auroc"] <= 1 and 0 <= out["shipped"]["agreement"] <= 1

    data = ragtruth_fixture(tmp_path / "rt.jsonl")
    fitted = json.loads(hearth("train", "grounding", "--ragtruth", str(data), "--feedback", "--json",
                               home=hearth_home).stdout)
    personal = hearth_home / "grounding" / "weights.json"
    assert fitted["out"] == str(personal) and personal.is_file() and fitted["feedback_replies"] == 3
    assert fitted["fitted_on"] == "RAGTruth rt.jsonl (12) + your labels (4 sentences of 3 replies, weight 5)"
    again = json.loads(hearth("eval", "grounding", "--feedback", "--json", home=hearth_home).stdout)
    assert again["yours"]["fitted_on"] == fitted["fitted_on"] and again["shipped"] == out["shipped"]

    # the check uses your calibration from now on (its threshold is the one printed)
    (tmp_path / "rhine.md").write_text(SOURCE)
    checked = hearth("check", "--sources", str(tmp_path / "rhine.md"), "--answer", "The Rhine flows into the North "
                     "Sea.", home=hearth_home).stdout
    assert f"threshold {fitted['answer_threshold']['general']:.2f})" in checked
    # after an upgrade that changes the signals, the old calibration is set aside, not a crash
    weights = json.loads(personal.read_text())
    weights["general"]["sentence"]["features"][0] = "a signal of an older Hearth"
    personal.write_text(json.dumps(weights))
    proc = hearth("check", "--sources", str(tmp_path / "rhine.md"), "--answer", "The Rhine flows into the North "
                  "Sea.", home=hearth_home)
    assert "your calibration is not used" in caplog.text and "fitted on other signals" in caplog.text
    from assistant.grounding.check import shipped_calibration
    assert f"threshold {shipped_calibration().answer_threshold:.2f})" in proc.stdout
