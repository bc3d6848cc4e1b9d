"""Measure the hallucination check on human labels (RAGTruth, WiCE), fit its calibration, time it.

Signals are computed once per labelled file and cached under HEARTH_HOME/cache/grounding (they
take minutes: every answer is scored by the default model), so fitting and evaluating again is
quick. Calibration never sees what it is scored on: RAGTruth is cross-validated in folds grouped by
source document, WiCE is fitted on its dev claims and scored on its test claims.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from assistant.config import GROUNDING_QUESTION, ensure_dir, hearth_home
from assistant.errors import HearthError
from assistant.files import read_records, write_atomic
from assistant.grounding import feedback
from assistant.grounding.calibration import (GENERAL, KIND_REGULARISATION, KINDS, REGULARISATION, SENTENCE_FEATURES,
                                             WEIGHTS, Calibration, for_kind, load_calibrations, save_calibrations)

MEASUREMENTS_VERSION = "1"  # bump when the splitting, embedder or model scoring changes
FOLDS = 5
RAGTRUTH_TASKS = ("QA", "Summary", "Data2txt")
# What each RAGTruth task asked of the model that wrote the response (the question we score under).
TASK_QUESTIONS = {
    "Summary": "Summarize the news article.",
    "Data2txt": "Write an objective overview of the local business from its structured data.",
}
# The kind of grounded request (calibration.KINDS) each labelled task is; WiCE's claims are "general".
TASK_KINDS = {"QA": GROUNDING_QUESTION, "Summary": "summary", "Data2txt": "data"} | feedback.TASK_KINDS
MIN_KIND_LABELS = 20  # a kind gets its own calibration only with this many answers of each label


@dataclass
class Example:
    """One labelled answer: `spans` are the human-marked hallucinated character ranges (RAGTruth).

    A user's labels (grounding.feedback) cover only some sentences: `labelled` holds the ranges
    whose truth is known (None: all of the answer), and `hallucinated` is None when the answer's
    own label is not known.
    """

    id: str
    group: str
    task: str
    question: str
    sources: list[str]
    answer: str
    hallucinated: bool | None
    spans: list[tuple[int, int]]
    labelled: list[tuple[int, int]] | None = None

    @property
    def kind(self) -> str:
        return TASK_KINDS.get(self.task, GENERAL)


MIN_EXAMPLES = 5  # the grouped cross-validation has 5 folds


def _labelled(what: str):
    """A loader of labelled data whose wrong or missing fields are a one-line error naming the file."""

    def decorate(load):
        @functools.wraps(load)
        def wrapper(path: Path) -> list[Example]:
            try:
                examples = load(path)
            except (KeyError, TypeError, ValueError, SyntaxError, AttributeError) as exc:
                raise HearthError(f"{path} is not {what} data (a record lacks or has a wrong {exc})") from None
            if len(examples) < MIN_EXAMPLES:
                raise HearthError(f"{path} has {len(examples)} labelled examples; an evaluation needs {MIN_EXAMPLES}")
            return examples

        return wrapper

    return decorate


@_labelled("RAGTruth")
def load_ragtruth(path: Path) -> list[Example]:
    """RAGTruth responses; a record repeated under the same response id is read once."""
    out, seen = [], set()
    for r in read_records(path):
        if str(r["id"]) in seen:
            continue
        seen.add(str(r["id"]))
        info, task = r["source_info"], r["task_type"]
        if task == "QA":
            question, sources = info["question"], [info["passages"]]
        else:
            text = info if isinstance(info, str) else json.dumps(info, ensure_ascii=False)
            question, sources = TASK_QUESTIONS.get(task, ""), [text]
        spans = [(int(s["start"]), int(s["end"])) for s in r["labels"]]
        out.append(Example(str(r["id"]), str(r["source_id"]), task, question, sources, r["response"], bool(spans), spans))
    return out


@_labelled("WiCE")
def load_wice(path: Path) -> list[Example]:
    out = []
    for n, r in enumerate(read_records(path)):
        evidence = r["evidence"] if isinstance(r["evidence"], list) else ast.literal_eval(r["evidence"])
        unsupported = r["label"] != "supported"  # "partially_supported" counts as not supported
        out.append(Example(str(n), str(n), "claim", "", ["\n".join(evidence)], r["claim"], unsupported,
                           [(0, len(r["claim"]))] if unsupported else []))
    return out


@_labelled("SummaC")
def load_summac(path: Path) -> list[Example]:
    """SummaC-style claims (`dataset`, `label` 1 consistent / 0 not, `claim`, `doc_id`), their source
    documents read from documents.jsonl beside the file; a claim is grouped by its document."""
    documents_file = Path(path).parent / SUMMAC_DOCUMENTS
    if not documents_file.is_file():
        raise HearthError(f"{documents_file} not found: SummaC claims are joined to their documents by doc_id.")
    documents = {r["doc_id"]: r["document"] for r in read_records(documents_file)}
    out = []
    for n, r in enumerate(read_records(path)):
        made_up = int(r["label"]) == 0
        claim = r["claim"]
        out.append(Example(str(n), str(r["doc_id"]), str(r["dataset"]), "", [documents[r["doc_id"]]], claim,
                           made_up, [(0, len(claim))] if made_up else []))
    return out


SUMMAC_DOCUMENTS, SUMMAC_VALIDATION = "documents.jsonl", "claims.jsonl"
LOADERS = {"ragtruth": load_ragtruth, "wice": load_wice, "summac": load_summac}


@dataclass
class Scored:
    """An example's sentence signal rows (verifiable sentences only) and their labels."""

    example: Example
    rows: np.ndarray  # (n, len(SENTENCE_FEATURES))
    labels: np.ndarray  # per row: does a human-marked span overlap the sentence
    known: np.ndarray | None = None  # per row: is its label known (None: every row's is)
    weight: float = 1.0  # how much the example counts in a fit

    @property
    def labelled_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, labels) of the sentences whose label is known."""
        return (self.rows, self.labels) if self.known is None else (self.rows[self.known], self.labels[self.known])


def file_cache(data: Path) -> Path:
    """Where the measurements of a labelled file's examples are kept."""
    key = hashlib.sha256(Path(data).read_bytes() + MEASUREMENTS_VERSION.encode()).hexdigest()[:16]
    return ensure_dir(hearth_home() / "cache" / "grounding") / f"{key}.json"


def feedback_cache() -> Path:
    """Where the measurements of the user's labelled replies are kept (keyed by their text)."""
    return ensure_dir(hearth_home() / "cache" / "grounding") / f"feedback-{MEASUREMENTS_VERSION}.json"


def compute_signals(examples: list[Example], cache: Path, report: Callable[[str], None] = print) -> list[Scored]:
    """Signals of every example; the model measurements of an example already in the cache file
    (by id) are read from it."""
    from tqdm import tqdm

    from assistant.grounding.check import Measurements, add_support, default_scorer, measure, signals_from
    from assistant.grounding.support import shipped_model
    from retrieval.embedder import shared_embedder

    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [e for e in examples if e.id not in cached]
    if todo:
        report(f"measuring {len(todo)} answers with the embedder, the default model and the support model "
               f"(cached in {cache})")
        embedder, scorer, model = shared_embedder(), default_scorer(), shipped_model()
        last_save = time.monotonic()
        for e in tqdm(todo, unit="answer", desc="measure", disable=None):
            cached[e.id] = measure(e.answer, e.sources, embedder, scorer, e.question, model).to_dict()
            if time.monotonic() - last_save > 30:  # an interrupted run keeps what it measured
                _save(cache, cached)
                last_save = time.monotonic()
        _save(cache, cached)
    unread = [e for e in examples if cached[e.id].get("support") is None and cached[e.id]["verifiable"]]
    if unread:  # measured before the support model was a signal: only its readings are missing
        report(f"reading {len(unread)} measured answers with the support model (cached in {cache})")
        model = shipped_model()
        for e in tqdm(unread, unit="answer", desc="support", disable=None):
            measured = Measurements.from_dict(cached[e.id])
            add_support(measured, e.answer, e.sources, model)
            cached[e.id]["support"] = measured.support
        _save(cache, cached)
    out = []
    for e in examples:
        found = signals_from(Measurements.from_dict(cached[e.id]), e.answer, e.sources, e.question)
        rows = [(r, _overlaps(a, b, e.spans), e.labelled is None or _overlaps(a, b, e.labelled))
                for (a, b), r in zip(found.spans, found.rows) if r is not None]
        out.append(Scored(e, np.array([r for r, _, _ in rows], dtype=np.float64).reshape(-1, len(SENTENCE_FEATURES)),
                          np.array([lab for _, lab, _ in rows], dtype=bool),
                          None if e.labelled is None else np.array([k for _, _, k in rows], dtype=bool)))
    return out


def _overlaps(a: int, b: int, spans: list[tuple[int, int]]) -> bool:
    return any(s < b and t > a for s, t in spans)


def _save(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data))


def fit(scored: list[Scored], fitted_on: str = "", features: tuple[str, ...] = SENTENCE_FEATURES) -> dict[str, Calibration]:
    """Calibrations on these signals from labelled answers: general on all, and one per kind with
    enough of its own. Answers with no verifiable sentence are left out.
    """
    usable = [s for s in scored if len(s.rows)]
    general = _fit_one(usable, fitted_on, features)
    calibrations = {GENERAL: general}
    for kind in (k for k in KINDS if k != GENERAL):
        own = [s for s in usable if s.example.kind == kind]
        positives = sum(s.example.hallucinated is True for s in own)
        negatives = sum(s.example.hallucinated is False for s in own)
        if min(positives, negatives) >= MIN_KIND_LABELS:
            calibrations[kind] = _fit_one(own, f"{fitted_on} ({len(own)} {kind} answers)", features,
                                          KIND_REGULARISATION, base=general)
    return calibrations


def _fit_one(usable: list[Scored], fitted_on: str, features: tuple[str, ...], c: float = REGULARISATION,
             base: Calibration | None = None) -> Calibration:
    """Sentences whose label is known fit the sentence model, answers whose label is known the answer model."""
    sentences = [s.labelled_rows for s in usable]
    answers = [s for s in usable if s.example.hallucinated is not None]
    return Calibration.fit(np.concatenate([x for x, _ in sentences]), np.concatenate([y for _, y in sentences]),
                           [s.rows for s in answers], [s.example.hallucinated for s in answers], fitted_on, c, base,
                           sentence_weight=np.concatenate([np.full(len(y), s.weight) for s, (_, y) in zip(usable, sentences)]),
                           answer_weight=np.array([s.weight for s in answers]), features=features)


def predict(calibrations: dict[str, Calibration], scored: list[Scored]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(P(answer hallucinated) per answer, P(sentence hallucinated) per sentence row of each answer).

    Each answer is scored by its kind's calibration. An answer with nothing verifiable in it gets 0:
    there is nothing it could have made up.
    """
    answers, sentences = np.zeros(len(scored)), []
    for i, s in enumerate(scored):
        calibration = for_kind(calibrations, s.example.kind)
        answers[i] = 1 - calibration.answer_support(s.rows) if len(s.rows) else 0.0
        sentences.append(1 - calibration.sentence_support(s.rows) if len(s.rows) else np.zeros(0))
    return answers, sentences


def grouped_folds(scored: list[Scored], folds: int = FOLDS):
    from sklearn.model_selection import GroupKFold

    groups = [s.example.group for s in scored]
    return GroupKFold(folds).split(np.zeros(len(scored)), groups=groups)


def metrics(fmt: str, scored: list[Scored], answer_p: np.ndarray, sentence_p: list[np.ndarray]) -> dict:
    """AUROCs, and precision/recall/F1 with each answer judged at its kind's shipped threshold."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    from assistant.grounding.check import shipped_calibration

    y = np.array([s.example.hallucinated for s in scored])
    thresholds = {kind: shipped_calibration(kind).answer_threshold for kind in sorted({s.example.kind for s in scored})}
    flagged = answer_p > 1 - np.array([thresholds[s.example.kind] for s in scored])  # support below the threshold
    precision, recall, f1, _ = precision_recall_fscore_support(y, flagged, average="binary", zero_division=0)
    by_task = None
    if fmt == "ragtruth":
        tasks = np.array([s.example.task for s in scored])
        by_task = {t: round(float(roc_auc_score(y[tasks == t], answer_p[tasks == t])), 4)
                   for t in RAGTRUTH_TASKS if len(set(y[tasks == t])) == 2}
    span_auroc = None
    if fmt == "ragtruth":
        labels = np.concatenate([s.labels for s in scored])
        span_auroc = round(float(roc_auc_score(labels, np.concatenate(sentence_p))), 4)
    return {
        "format": fmt,
        "n": len(scored),
        "auroc": round(float(roc_auc_score(y, answer_p)), 4),
        "auroc_by_task": by_task,
        "auroc_task_mean": round(float(np.mean(list(by_task.values()))), 4) if by_task else None,
        "precision": round(float(precision), 4),
        "recall": round(float(recall), 4),
        "f1": round(float(f1), 4),
        "threshold": next(iter(thresholds.values())) if len(thresholds) == 1 else thresholds,
        "span_auroc": span_auroc,
    }


def evaluate(data: Path, fmt: str, report: Callable[[str], None] = print, shipped: bool = False,
             fit_limit: int | None = None, features: tuple[str, ...] = SENTENCE_FEATURES,
             limit: int | None = None) -> dict:
    """Cross-validated (RAGTruth), dev-fitted (WiCE) or validation-fitted (SummaC) figures of the
    check on labelled data, fitted on these signals. fit_limit: fit SummaC on a seeded sample of
    this many validation claims; limit: score a seeded sample of this many RAGTruth answers.

    shipped scores with the shipped calibration instead of refitting; it is refused for a file the
    shipped weights were fitted on.
    """
    from assistant.grounding.check import shipped_calibration, shipped_calibrations

    if shipped:
        test_file = wice_pair(data)[0] if fmt == "wice" else Path(data)
        if test_file.name in shipped_calibration().fitted_on:
            raise HearthError(f"the shipped calibration was fitted on {test_file.name}; it cannot be scored on it.")
        loader = LOADERS.get(fmt)
        if loader is None:
            raise HearthError(f"unknown format {fmt!r}: use ragtruth or wice.")
        scored = compute_signals(loader(test_file), file_cache(test_file), report)
        return metrics(fmt, scored, *predict(shipped_calibrations(), scored))
    if fmt == "ragtruth":
        examples = load_ragtruth(data)
        if limit is not None and limit < len(examples):
            import random

            examples = random.Random(0).sample(examples, limit)
        scored = compute_signals(examples, file_cache(data), report)
        answer_p = np.zeros(len(scored))
        sentence_p: list[np.ndarray] = [np.zeros(0)] * len(scored)
        for train, test in grouped_folds(scored):
            a, s = predict(fit([scored[i] for i in train], features=features), [scored[i] for i in test])
            answer_p[test] = a
            for i, rows in zip(test, s):
                sentence_p[i] = rows
        return metrics(fmt, scored, answer_p, sentence_p)
    if fmt == "summac":
        return _evaluate_summac(Path(data), report, fit_limit, features)
    if fmt == "wice":
        test_file, dev_file = wice_pair(data)
        calibrations = fit(compute_signals(load_wice(dev_file), file_cache(dev_file), report), features=features)
        scored = compute_signals(load_wice(test_file), file_cache(test_file), report)
        return metrics(fmt, scored, *predict(calibrations, scored))
    raise HearthError(f"unknown format {fmt!r}: use ragtruth, wice or summac.")


def _evaluate_summac(test_file: Path, report: Callable[[str], None], fit_limit: int | None,
                     features: tuple[str, ...]) -> dict:
    """Fit the calibration on SummaC validation claims (claims.jsonl beside the file) of the same
    datasets, choose the threshold with the best balanced accuracy there, and score the file."""
    import random

    from sklearn.metrics import balanced_accuracy_score

    validation_file = test_file.parent / SUMMAC_VALIDATION
    if test_file.resolve() == validation_file.resolve():
        raise HearthError(f"{test_file.name} is the fitting set: pass the claims to score, e.g. cogensumm_test_claims.jsonl.")
    if not validation_file.is_file():
        raise HearthError(f"{validation_file} not found: SummaC scoring fits on the validation claims beside the file.")
    tested = load_summac(test_file)
    datasets = {e.task for e in tested}
    validation = [e for e in load_summac(validation_file) if e.task in datasets]
    if fit_limit is not None and fit_limit < len(validation):
        validation = random.Random(0).sample(validation, fit_limit)
    fitting = compute_signals(validation, file_cache(validation_file), report)
    calibrations = fit(fitting, f"SummaC {validation_file.name} {'/'.join(sorted(datasets))} ({len(fitting)})", features)
    fit_p, _ = predict(calibrations, fitting)
    fit_y = np.array([s.example.hallucinated for s in fitting])
    candidates = np.unique(fit_p)
    threshold = float(max(candidates, key=lambda t: balanced_accuracy_score(fit_y, fit_p >= t)))
    scored = compute_signals(tested, file_cache(test_file), report)
    answer_p, sentence_p = predict(calibrations, scored)
    y = np.array([s.example.hallucinated for s in scored])
    out = metrics("summac", scored, answer_p, sentence_p)
    out["balanced_accuracy"] = round(float(balanced_accuracy_score(y, answer_p >= threshold)), 4)
    out["validation_threshold"] = round(threshold, 4)
    out["fitted_on"] = len(fitting)
    return out


def wice_pair(data: Path) -> tuple[Path, Path]:
    """(test file, dev file) from WiCE's folder or its claim_test.jsonl."""
    data = Path(data)
    folder = data if data.is_dir() else data.parent
    test, dev = folder / "claim_test.jsonl", folder / "claim_dev.jsonl"
    if data.is_file() and data.name != test.name:
        raise HearthError(f"{data}: pass WiCE's claim_test.jsonl (its claim_dev.jsonl beside it is the fitting set).")
    for path in (test, dev):
        if not path.is_file():
            raise HearthError(f"{path} not found: WiCE needs claim_dev.jsonl (fitting) and claim_test.jsonl (scoring).")
    return test, dev


def fit_and_save(ragtruth: Path, wice: Path | None, out: Path, feedback_examples: list[Example] | None = None,
                 feedback_weight: float = 1.0, report: Callable[[str], None] = print,
                 features: tuple[str, ...] = SENTENCE_FEATURES) -> dict[str, Calibration]:
    """Fit the calibrations on all of RAGTruth (and WiCE's dev claims, and the user's labelled
    replies, each counting feedback_weight times) and write them to out."""
    scored = compute_signals(load_ragtruth(ragtruth), file_cache(ragtruth), report)
    names = [f"RAGTruth {Path(ragtruth).name} ({len(scored)})"]
    if wice is not None:
        _, dev = wice_pair(wice)
        more = compute_signals(load_wice(dev), file_cache(dev), report)
        scored += more
        names.append(f"WiCE {dev.name} ({len(more)})")
    if feedback_examples:
        yours = compute_signals(feedback_examples, feedback_cache(), report)
        for s in yours:
            s.weight = feedback_weight
        sentences = sum(len(s.labelled_rows[1]) for s in yours)
        scored += yours
        names.append(f"your labels ({sentences} sentences of {len(yours)} replies, weight {feedback_weight:g})")
    calibrations = fit(scored, " + ".join(names), features)
    # the relevance stage is fitted on answers, not on these labels (`hearth train relevance`): keep it
    try:
        previous = load_calibrations(out if Path(out).is_file() else WEIGHTS)
    except (OSError, ValueError, KeyError, TypeError):  # a calibration fitted on other signals: nothing to keep
        previous = load_calibrations(WEIGHTS)
    for kind, c in calibrations.items():
        if kind in previous and previous[kind].relevance is not None:
            c.relevance = previous[kind].relevance
            report(f"kept the relevance stage of [{kind}] ({c.relevance.fitted_on}); it reads the answer support "
                   f"this fit changes: refit it with `hearth train relevance`")
    ensure_dir(Path(out).parent)
    save_calibrations(calibrations, out)
    for kind, c in calibrations.items():
        report(f"wrote {out} [{kind}]: answer threshold {c.answer_threshold}, sentence threshold {c.sentence_threshold}")
    return calibrations


def evaluate_feedback(store, report: Callable[[str], None] = print) -> dict:
    """How the shipped calibration, and the user's own if there is one, judge the sentences the
    user labelled: AUROC of P(hallucinated) against the labels (sentences, and answers whose label
    is known) and the share of labelled sentences whose verdict agrees with the label."""
    from sklearn.metrics import roc_auc_score

    from assistant.grounding.check import personal_calibrations, shipped_calibrations

    scored = compute_signals(feedback.required_examples(store), feedback_cache(), report)
    labels = np.concatenate([s.labelled_rows[1] for s in scored])
    answers = [i for i, s in enumerate(scored) if s.example.hallucinated is not None and len(s.rows)]
    answer_y = np.array([scored[i].example.hallucinated for i in answers], dtype=bool)
    out = {"format": "feedback", "replies": len(scored), "sentences": int(len(labels)),
           "unsupported": int(labels.sum()), "answers": len(answers), "answers_hallucinated": int(answer_y.sum())}
    for name, calibrations in (("shipped", shipped_calibrations()), ("yours", personal_calibrations())):
        if calibrations is None:
            continue
        answer_p, sentence_p = predict(calibrations, scored)
        p = np.concatenate([rows if s.known is None else rows[s.known] for s, rows in zip(scored, sentence_p)])
        thresholds = np.concatenate([np.full(len(s.labelled_rows[1]), for_kind(calibrations, s.example.kind).sentence_threshold)
                                     for s in scored])
        out[name] = {
            "fitted_on": calibrations[GENERAL].fitted_on,
            "sentence_auroc": round(float(roc_auc_score(labels, p)), 4) if len(set(labels)) == 2 else None,
            "answer_auroc": (round(float(roc_auc_score(answer_y, answer_p[answers])), 4)
                             if len(set(answer_y)) == 2 else None),
            "agreement": round(float(np.mean((1 - p < thresholds) == labels)), 4) if len(labels) else None,
        }
    return out


def bench(sentences: int = 5, sources: int = 5, repeats: int = 3) -> dict:
    """Seconds the check adds to a typical grounded answer (models loaded and warm, as in a chat)."""
    from assistant.grounding.check import check, default_scorer
    from retrieval.embedder import shared_embedder

    facts = [("The Rhine flows {} kilometres from the Alps to the North Sea.", "1,230"),
             ("Its basin covers parts of {} countries.", "nine"),
             ("Basel, Cologne and Rotterdam are major {} on the river.", "ports"),
             ("The river carries barge traffic {} through the year.", "through Germany"),
             ("Salmon returned to the Rhine after the {} cleanup programme.", "1987")]
    texts = []
    for i in range(sources):
        filler = " ".join(f.format(v) for f, v in facts)
        texts.append((i + 1, f"Section {i + 1}. " + filler * 4))
    answer = " ".join(f.format(v) for f, v in (facts * 2)[:sentences])
    embedder, scorer = shared_embedder(), default_scorer()
    check(answer, texts, embedder, scorer)  # warm-up: loads both models
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = check(answer, texts, embedder, scorer, question="Tell me about the Rhine.")
        times.append(time.perf_counter() - start)
    assert len(result.sentences) == sentences
    return {"sentences": sentences, "sources": sources,
            "source_tokens": sum(embedder.count_tokens(t) for _, t in texts),
            "check_s": round(float(np.median(times)), 3), "check_s_max": round(max(times), 3)}

