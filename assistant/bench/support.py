"""The support model alone as a hallucination detector, on the same labelled data as the check.

An answer's support is its weakest verifiable sentence's (each sentence scored against its best
source window); AUROC is of 1 - support against the human label. Nothing is fitted, except the
SummaC threshold, which is chosen on the validation claims beside the test file, as for the check.
Probabilities are cached per file and support model under HEARTH_HOME/cache/support.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from assistant.bench.grounding import LOADERS, RAGTRUTH_TASKS, SUMMAC_VALIDATION, Example, load_summac, wice_pair
from assistant.config import ensure_dir, hearth_home
from assistant.errors import HearthError
from assistant.files import write_atomic


def sentence_supports(example: Example, model, embedder) -> list[dict]:
    """The support model's reading of each verifiable sentence of the answer (support.measured),
    the sentences and windows chosen exactly as the check chooses them."""
    from assistant.grounding.check import _sentence_text, is_verifiable
    from assistant.grounding.semantic import similarities
    from assistant.grounding.split import split_sentences
    from assistant.grounding.support import measured

    texts = [_sentence_text(example.answer, span) for span in split_sentences(example.answer)]
    texts = [t for t in texts if is_verifiable(t)]
    if not texts:
        return []
    cosines, _ = similarities(embedder, texts, example.sources)
    return measured(model, texts, example.sources, cosines)


def measure(examples: list[Example], data: Path, model, report: Callable[[str], None]) -> dict[str, list[dict]]:
    from tqdm import tqdm

    from assistant.grounding.support import WEIGHTS_FILE
    from retrieval.embedder import shared_embedder

    weights = (Path(model.folder) / WEIGHTS_FILE).read_bytes()
    key = hashlib.sha256(Path(data).read_bytes() + weights).hexdigest()[:16]
    cache = ensure_dir(hearth_home() / "cache" / "support") / f"{key}.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [e for e in examples if e.id not in cached]
    if todo:
        report(f"scoring {len(todo)} answers with the support model (cached in {cache})")
        embedder, last_save = shared_embedder(), time.monotonic()
        for e in tqdm(todo, unit="answer", desc="support", disable=None):
            cached[e.id] = sentence_supports(e, model, embedder)
            if time.monotonic() - last_save > 30:
                write_atomic(cache, json.dumps(cached))
                last_save = time.monotonic()
        write_atomic(cache, json.dumps(cached))
    return {e.id: cached[e.id] for e in examples}


def hallucination_scores(examples: list[Example], found: dict[str, list[dict]]) -> np.ndarray:
    """1 - the weakest sentence's support (0 for an answer with nothing verifiable)."""
    return np.array([1.0 - min((s["p"] for s in found[e.id]), default=1.0) for e in examples])


def evaluate_support(data: Path, fmt: str, model_folder: Path | None = None,
                     report: Callable[[str], None] = print) -> dict:
    """AUROC of the support model alone on RAGTruth, WiCE (test claims) or SummaC claims."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from assistant.grounding.support import SupportModel

    model = SupportModel(model_folder)
    data = Path(data)
    if fmt == "wice":
        data = wice_pair(data)[0]
    loader = LOADERS.get(fmt)
    if loader is None:
        raise HearthError(f"unknown format {fmt!r}: use ragtruth, wice or summac.")
    examples = loader(data)
    p = hallucination_scores(examples, measure(examples, data, model, report))
    y = np.array([e.hallucinated for e in examples])
    out = {"format": fmt, "signal": "support", "model": str(model.folder), "n": len(examples),
           "auroc": round(float(roc_auc_score(y, p)), 4)}
    if fmt == "ragtruth":
        tasks = np.array([e.task for e in examples])
        by_task = {t: round(float(roc_auc_score(y[tasks == t], p[tasks == t])), 4)
                   for t in RAGTRUTH_TASKS if len(set(y[tasks == t])) == 2}
        out["auroc_by_task"] = by_task
        out["auroc_task_mean"] = round(float(np.mean(list(by_task.values()))), 4)
    if fmt == "summac":
        validation_file = data.parent / SUMMAC_VALIDATION
        if data.resolve() == validation_file.resolve():
            raise HearthError(f"{data.name} is where the threshold is chosen: pass the claims to score.")
        datasets = {e.task for e in examples}
        validation = [e for e in load_summac(validation_file) if e.task in datasets]
        fit_p = hallucination_scores(validation, measure(validation, validation_file, model, report))
        fit_y = np.array([e.hallucinated for e in validation])
        threshold = float(max(np.unique(fit_p), key=lambda t: balanced_accuracy_score(fit_y, fit_p >= t)))
        out["balanced_accuracy"] = round(float(balanced_accuracy_score(y, p >= threshold)), 4)
        out["validation_threshold"] = round(threshold, 4)
        out["threshold_chosen_on"] = len(validation)
    return out

