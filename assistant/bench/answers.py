"""`hearth eval answers`: grounded answers end to end on SQuAD, as a user gets them.

The articles become a document collection; each sampled question goes through the same
ChatSession a `hearth ask --docs` uses (retrieval, grounded prompt, generation, citations, check).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
import tempfile
import time
from pathlib import Path
from typing import Callable

from assistant.bench.retrieval import load_squad
from assistant.conversation import DoneEvent, TokenEvent, open_session
from assistant.grounding import lexical
from assistant.settings import ChatSettings
from backends.base import Backend
from retrieval.collection import Collection
from retrieval.embedder import shared_embedder

COLLECTION = "squad"  # the evaluation's own collection, in a temporary folder
# How the model says the documents do not answer (Hearth's own abstention included). Used only to
# count refusals; a refusal in other words counts as an answer.
REFUSAL = re.compile(
    r"\b(?:don'?t|do not|cannot|can'?t) (?:know|answer|find)\b"
    r"|\bdo(?:es)?(?:n'?t| not) (?:contain|mention|provide|say|specify|state|include)\b"
    r"|\bnot (?:mentioned|specified|stated|provided|given)\b"
    r"|\bno (?:information|mention)\b",
    re.IGNORECASE,
)


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation or articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def contains_answer(reply: str, answers: tuple[str, ...]) -> bool:
    reply = normalise(reply)
    return any(normalise(a) and normalise(a) in reply for a in answers)


def write_articles(paragraphs: list[tuple[str, str]], folder: Path) -> None:
    """One Markdown file per article: its title, then its paragraphs."""
    articles: dict[str, list[str]] = {}
    for title, text in paragraphs:
        articles.setdefault(title, []).append(text)
    for n, (title, texts) in enumerate(articles.items()):
        (folder / f"{n:03d}.md").write_text(f"# {title}\n\n" + "\n\n".join(texts) + "\n", encoding="utf-8")


def articles_collection(paragraphs: list[tuple[str, str]], folder: Path):
    """(Collection, IngestReport): the articles as Markdown files in `folder`, ingested into a
    collection there (as a user's documents would be)."""
    docs = folder / "docs"
    docs.mkdir()
    write_articles(paragraphs, docs)
    collection = Collection(COLLECTION, embedder=shared_embedder(), root=folder / "collections")
    return collection, collection.ingest([docs])


def _auroc(positive: list[float], negative: list[float]) -> float | None:
    """AUROC of positives against negatives (None when either is empty)."""
    if not positive or not negative:
        return None
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score([1] * len(positive) + [0] * len(negative), positive + negative)), 4)


def _auroc_correct(scores: list[float], correct: list[bool]) -> float | None:
    """Does the score rank answers that contain the gold answer above those that do not?"""
    return _auroc([s for s, ok in zip(scores, correct) if ok], [s for s, ok in zip(scores, correct) if not ok])


def _rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


class AnswerRows:
    """Every scored answer of an evaluation, appended to a JSONL file as it is given, so that a
    long run loses nothing on a crash and a rerun answers only what is missing. A row is reused
    only under the same key: the same SQuAD file, settings, adapter weights and calibration
    (variant_key), so a comparison whose adapter changed re-answers the adapter side only."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.rows: dict[tuple[str, int], dict] = {}
        if self.path and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[(row.pop("key"), row.pop("question"))] = row
                except (ValueError, KeyError, AttributeError):
                    continue  # a line cut short by a crash

    def get(self, key: str, question: int) -> dict | None:
        return self.rows.get((key, question))

    def add(self, key: str, question: int, row: dict) -> None:
        self.rows[(key, question)] = row
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "question": question} | row) + "\n")


def _file_hash(path: Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path and Path(path).is_file() else None


def variant_key(squad: Path, settings: ChatSettings, backend: Backend) -> str:
    """What an answer row depends on: the questions' file, the settings, the weights of the adapter
    the answers go through, and the calibration the check uses."""
    from assistant.grounding.calibration import WEIGHTS
    from assistant.grounding.check import personal_weights

    adapter = settings.adapter or (getattr(backend, "grounded_adapter", None) if settings.grounded_adapter else None)
    calibration = personal_weights() if personal_weights().is_file() else WEIGHTS
    identity = {"squad": _file_hash(squad), "settings": settings.to_dict(),
                "adapter": _file_hash(Path(adapter) / "adapter_model.safetensors") if adapter else None,
                "calibration": _file_hash(calibration)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def eval_answers(squad: Path, settings: ChatSettings, backend: Backend, limit: int = 100, seed: int = 0,
                 report: Callable[[str], None] = print, compare_adapter: bool = False,
                 rows_file: Path | None = None) -> dict:
    """Answer a seeded sample of the file's questions from its own articles and score the replies
    (settings: the model's, sampling, sources per answer, max tokens; the collection is built here).
    `compare_adapter`: answer each question twice, without and with the grounded-answer adapter
    (same retrieval), and report both. `rows_file`: keep every answer there (AnswerRows)."""
    settings = settings.replace(collection=COLLECTION)
    variants = {"base": settings.replace(grounded_adapter=False), "adapter": settings.replace(grounded_adapter=True)} \
        if compare_adapter else {"run": settings}
    keys = {name: variant_key(squad, variant, backend) for name, variant in variants.items()}
    kept = AnswerRows(rows_file)
    paragraphs, questions = load_squad(squad)
    # a seeded order of all the questions, cut at the limit: a larger limit extends a smaller one's sample
    sample = random.Random(seed).sample(range(len(questions)), len(questions))[:limit]
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    reused = sum(kept.get(keys[name], i) is not None for name in variants for i in sample)
    with tempfile.TemporaryDirectory(prefix="hearth-answers-") as tmp:
        collection, ingested = articles_collection(paragraphs, Path(tmp))
        report(f"{len(paragraphs)} paragraphs as {ingested.added} articles, {ingested.chunks} chunks; "
               f"{len(sample)} questions" + (", each answered without and with the adapter" if compare_adapter else "")
               + (f"; {reused} answers kept in {rows_file}" if reused else ""))
        started = time.perf_counter()
        for n, i in enumerate(sample, 1):
            for name, variant in variants.items():
                row = kept.get(keys[name], i)
                if row is None:
                    row = _answer(questions[i], variant, backend, collection)
                    kept.add(keys[name], i, row)
                rows[name].append(row)
            if n % 10 == 0 or n == len(sample):
                elapsed = time.perf_counter() - started
                report(f"{n}/{len(sample)} questions, {elapsed:.0f} s, "
                       f"ETA {elapsed / n * (len(sample) - n):.0f} s")
        collection.close()
    seconds = round(time.perf_counter() - started, 1)
    summaries = {name: _summary(r) | {"sampling": settings.sampling.to_dict(), "seconds": seconds}
                 for name, r in rows.items()}
    if not compare_adapter:
        return summaries["run"]
    return {"n": len(sample), **summaries}


def _answer(q, settings: ChatSettings, backend: Backend, collection) -> dict:
    """One question through a fresh session, scored."""
    session = open_session(settings, backend=backend, collection=collection)
    written = []  # what the model wrote (Hearth may add citations to the stored reply)
    for event in session.send(q.text):
        if isinstance(event, TokenEvent):
            written.append(event.text)
        elif isinstance(event, DoneEvent):
            done = event
    reply = done.message
    refused = bool(REFUSAL.search(reply.content))
    return {
        "impossible": q.impossible,
        "correct": (not q.impossible) and contains_answer(reply.content, q.answers),
        "refused": refused,
        "cited": (not refused) and bool(lexical.CITATION.search("".join(written))),
        "cut": done.finish_reason == "length",
        "tokens": reply.timings.completion_tokens,
        "support": (reply.checks or {}).get("score"),  # the check's score of the answer
        "answer_support": (reply.checks or {}).get("support"),  # its support by the sources alone
        "relevance": (reply.checks or {}).get("relevance"),  # the relevance signals the check measured
        "consistency": (reply.checks or {}).get("consistency"),  # with --self-check: agreement with the samples
        "reply": reply.content,  # for reading the answers afterwards; not scored again
    }


def _kind(rows: list[dict]) -> dict:
    """The figures for answerable or unanswerable questions."""
    answered = [r for r in rows if not r["refused"]]
    scored = [r for r in rows if r["support"] is not None and not r["impossible"]]
    alone = [r for r in scored if r.get("answer_support") is not None]
    return {
        "n": len(rows),
        "contains_gold": _rate([r["correct"] for r in rows]) if rows and not rows[0]["impossible"] else None,
        "refused": _rate([r["refused"] for r in rows]),
        "cited_of_answers": _rate([r["cited"] for r in answered]),
        "cut_at_max_tokens": _rate([r["cut"] for r in rows]),
        "mean_completion_tokens": round(sum(r["tokens"] for r in rows) / len(rows), 1) if rows else None,
        "support_auroc_correct": _auroc_correct([r["support"] for r in scored], [r["correct"] for r in scored]),
        # the same for the support by the sources alone (without the relevance stage)
        "answer_support_auroc_correct": _auroc_correct([r["answer_support"] for r in alone],
                                                       [r["correct"] for r in alone]),
    }


def _summary(rows: list[dict]) -> dict:
    answerable = [r for r in rows if not r["impossible"]]
    unanswerable = [r for r in rows if r["impossible"]]
    scored = [r for r in rows if r["support"] is not None]
    mine = _kind(answerable)
    return {
        "n": len(rows),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "contains_gold": mine["contains_gold"],
        "answerable_refused": mine["refused"],
        "unanswerable_refused": _rate([r["refused"] for r in unanswerable]),
        "cut_at_max_tokens": _rate([r["cut"] for r in rows]),
        "mean_completion_tokens": round(sum(r["tokens"] for r in rows) / len(rows), 1),
        "mean_support": round(sum(r["support"] for r in scored) / len(scored), 4) if scored else None,
        "support_auroc_correct": mine["support_auroc_correct"],
        "answer_support_auroc_correct": mine["answer_support_auroc_correct"],
        "answerable": mine,
        "unanswerable": _kind(unanswerable),
    }


def fit_relevance(squad: Path, rows_files: list[Path], out: Path, report: Callable[[str], None] = print) -> dict:
    """Fit the `question` calibration's relevance stage (calibration.RelevanceStage) on answers kept
    by `eval answers --rows` for this SQuAD file: every answer that was not refused, labelled wrong
    when it misses the gold answer (any answer to an unanswerable question is wrong), and write it
    into the calibrations at `out` (the rest of them unchanged)."""
    import numpy as np

    from assistant.config import GROUNDING_QUESTION
    from assistant.errors import HearthError
    from assistant.grounding import relevance
    from assistant.grounding.calibration import RelevanceStage, load_calibrations, save_calibrations

    _, questions = load_squad(squad)
    kept = [(question, row) for path in rows_files for (_key, question), row in AnswerRows(path).rows.items()]
    if any(question >= len(questions) for question, _ in kept):
        raise HearthError(f"the rows were not kept for {squad} (a question number is past its end)")
    answered = [(questions[i], row) for i, row in kept
                if not row["refused"] and row["support"] is not None]
    x, wrong, support = [], [], []
    embedder = shared_embedder()
    for q, row in answered:
        # the signals as the check measured them (with the sources), else from the question and reply alone
        signals = row.get("relevance") or relevance.features(q.text, row["reply"], embedder)
        if signals is None:
            continue
        x.append([signals[name] for name in relevance.FEATURES])
        wrong.append(not row["correct"])
        # rows from before the relevance stage have only the score, which was the support alone
        support.append(row.get("answer_support", row["support"]))
    if len(set(wrong)) < 2:
        raise HearthError(f"{len(wrong)} answers with a score; fitting needs right and wrong ones")
    x, wrong, support = np.array(x), np.array(wrong, dtype=bool), np.array(support)
    names = ", ".join(Path(p).name for p in rows_files)
    stage = RelevanceStage.fit(x, wrong, support,
                               f"{len(wrong)} answers ({int(wrong.sum())} wrong) to {Path(squad).name} in {names}")
    calibrations = load_calibrations(out)
    if GROUNDING_QUESTION not in calibrations:
        raise HearthError(f"{out} has no {GROUNDING_QUESTION!r} calibration to add the stage to")
    calibrations[GROUNDING_QUESTION].relevance = stage
    save_calibrations(calibrations, out)
    scores = [stage.score(a, dict(zip(relevance.FEATURES, row))) for a, row in zip(support, x)]
    result = {"out": str(out), "answers": len(wrong), "wrong": int(wrong.sum()), "threshold": stage.threshold,
              "coefficients": dict(zip(stage.model.features, (round(c, 4) for c in stage.model.coef))),
              # on the answers it was fitted on: how the stage ranks them, against the support alone
              "fit_auroc": _auroc_correct(scores, list(~wrong)),
              "fit_auroc_support_alone": _auroc_correct(list(support), list(~wrong))}
    report(f"wrote the relevance stage of {out} [{GROUNDING_QUESTION}]: {result['answers']} answers, "
           f"{result['wrong']} wrong; threshold {stage.threshold}; AUROC on them {result['fit_auroc']} "
           f"(support alone {result['fit_auroc_support_alone']})")
    return result
