"""The hallucination check: every sentence of an answer scored against the sources it was given."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from assistant.config import GROUNDING_QUESTION as QUESTION
from assistant.config import hearth_home
from assistant.grounding import lexical, model_evidence, relevance, semantic, support
from assistant.grounding.calibration import GENERAL, SENTENCE_FEATURES, Calibration, for_kind, load_calibrations
from assistant.grounding.consistency import consistency
from assistant.grounding.split import is_code, split_sentences
from retrieval.chunker import sentences as sentence_spans_of

log = logging.getLogger(__name__)

# Five sources of ~256 tokens fit; longer source sets are cut in the middle (cost grows with length).
SCORER_MAX_TOKENS = 2048
_NON_FACTUAL = re.compile(
    r"^(i don't know|i do not know|i'm not sure|i am not sure|sorry|hello|hi|thanks|thank you|you're welcome)\b", re.I)


@dataclass
class SentenceCheck:
    """One answer sentence and how well the sources support it."""

    text: str
    start: int
    end: int
    score: float
    verdict: str  # "supported" | "unsupported" | "unverifiable"
    evidence: list[int] = field(default_factory=list)  # chunk ids, best first
    # The source sentence the support model read the sentence against with the best result:
    # {"chunk": chunk id, "start", "end" (offsets in the chunk's text), "text", "support"}; the
    # grounded-answer layer adds where it is ("path", "line", "rank").
    receipt: dict | None = None


@dataclass
class Checks:
    """The check of a whole answer: `score` in [0, 1] (None: nothing to check) is its support by the
    sources (`support`), read with whether it addresses the question when the calibration has a
    relevance stage (`relevance`: those signals)."""

    score: float | None
    sentences: list[SentenceCheck]
    threshold: float | None = None
    support: float | None = None
    relevance: dict[str, float] | None = None
    consistency: float | None = None  # with self-check: the sentences' mean agreement with the re-sampled answers

    @property
    def supported(self) -> bool:
        return self.score is None or self.threshold is None or self.score >= self.threshold

    def to_dict(self) -> dict:
        return {"score": self.score, "threshold": self.threshold, "support": self.support,
                "relevance": self.relevance, "consistency": self.consistency,
                "sentences": [asdict(s) for s in self.sentences]}


@dataclass
class Signals:
    """The raw signals of an answer's sentences: `rows[i]` is None for an unverifiable sentence."""

    spans: list[tuple[int, int]]
    rows: list[np.ndarray | None]
    evidence: list[list[int]]  # indices into the sources, best first
    receipts: list[dict | None]  # per sentence: its evidence sentence (source index, start, end) and support


def is_verifiable(sentence: str) -> bool:
    """False for sentences with no factual content: refusals, greetings, bare code."""
    text = lexical.CITATION.sub("", sentence).strip()
    return bool(lexical.content_terms(text)) and not _NON_FACTUAL.match(text) and not is_code(text)


@dataclass
class Measurements:
    """What the models say about an answer (the slow part of a check; the signals derive from it).

    `cosines[k]` holds the k-th verifiable sentence's cosine to every source sentence, whose
    source index is in `owners`; `tokens` are the model's per-token log-probabilities; `support[k]`
    is the support model's reading of the k-th verifiable sentence (support.measured).
    """

    spans: list[tuple[int, int]]
    verifiable: list[int]
    cosines: np.ndarray
    owners: np.ndarray
    tokens: model_evidence.TokenEvidence | None
    support: list[dict] | None = None

    def to_dict(self) -> dict:
        return {"spans": self.spans, "verifiable": self.verifiable,
                "cosines": np.round(self.cosines, 4).tolist(), "owners": self.owners.tolist(),
                "tokens": self.tokens.to_dict() if self.tokens is not None else None, "support": self.support}

    @classmethod
    def from_dict(cls, d: dict) -> "Measurements":
        tokens = model_evidence.TokenEvidence.from_dict(d["tokens"]) if d["tokens"] is not None else None
        cosines = np.array(d["cosines"], dtype=np.float32).reshape(len(d["verifiable"]), len(d["owners"]))
        return cls([tuple(s) for s in d["spans"]], d["verifiable"], cosines, np.array(d["owners"], dtype=np.int64),
                   tokens, d.get("support"))


def _sentence_text(answer: str, span: tuple[int, int]) -> str:
    return lexical.CITATION.sub("", answer[span[0] : span[1]]).strip()


def measure(answer: str, sources: list[str], embedder, scorer: model_evidence.TokenScorer | None,
            question: str = "", support_model: "support.SupportModel | None" = None) -> Measurements:
    """Split the answer, embed its verifiable sentences against the sources, score its tokens, and
    read each against its best source windows (support_model None: left for the caller to add)."""
    spans = split_sentences(answer)
    verifiable = [i for i, span in enumerate(spans) if is_verifiable(_sentence_text(answer, span))]
    texts = [_sentence_text(answer, spans[i]) for i in verifiable]
    cosines, owners = semantic.similarities(embedder, texts, sources)
    tokens = scorer.score(answer, sources, question) if scorer is not None and verifiable else None
    found = support.measured(support_model, texts, sources, cosines) if support_model is not None else None
    return Measurements(spans, verifiable, cosines, owners, tokens, found)


def signals_from(measured: Measurements, answer: str, sources: list[str], question: str = "") -> Signals:
    """Lexical, semantic and model signals of every sentence of the answer.

    The question counts as a source for the lexical signals: an answer may repeat its words.
    """
    spans = measured.spans
    index = lexical.SourceIndex(sources + ([question] if question else []))
    rows: list[np.ndarray | None] = [None] * len(spans)
    evidence: list[list[int]] = [[] for _ in spans]
    receipts: list[dict | None] = [None] * len(spans)
    for k, i in enumerate(measured.verifiable):
        a, b = spans[i]
        values = lexical.lexical_features(_sentence_text(answer, spans[i]), index) or {}
        values.update(semantic.semantic_features(measured.cosines[k]))
        tokens = measured.tokens
        model = tokens.features(a, b, answer, index) if tokens is not None else None
        values.update(model or dict.fromkeys(model_evidence.FEATURES, 0.0))
        # without the support model's readings (measure() left them to the caller) its signals read as no support
        values.update(support.features(measured.support[k]) if measured.support is not None
                      else dict.fromkeys(support.FEATURES, 0.0))
        rows[i] = np.array([values[name] for name in SENTENCE_FEATURES])
        evidence[i] = semantic.best_sources(measured.cosines[k], measured.owners)
        if measured.support is not None:
            receipts[i] = support.receipt(measured.support[k], sources)
    return Signals(spans, rows, evidence, receipts)


def add_support(measured: Measurements, answer: str, sources: list[str], model: "support.SupportModel") -> None:
    """Add the support model's readings to measurements taken without them (from the cosines kept)."""
    texts = [_sentence_text(answer, measured.spans[i]) for i in measured.verifiable]
    measured.support = support.measured(model, texts, sources, measured.cosines)


def signals(answer: str, sources: list[str], embedder, scorer: model_evidence.TokenScorer | None,
            question: str = "", support_model: "support.SupportModel | None" = None) -> Signals:
    """Lexical, semantic, model and support signals of every sentence of the answer, and the
    support model's receipts."""
    measured = measure(answer, sources, embedder, scorer, question, support_model or support.shipped_model())
    return signals_from(measured, answer, sources, question)


@lru_cache(maxsize=1)
def shipped_calibrations() -> dict[str, Calibration]:
    return load_calibrations()


def shipped_calibration(kind: str = GENERAL) -> Calibration:
    """The shipped calibration for a kind of grounded request (see calibration.KINDS)."""
    return for_kind(shipped_calibrations(), kind)


def personal_weights() -> Path:
    """Where `hearth train grounding --feedback` writes the user's own calibration (fitted with
    their labels); the check uses it instead of the shipped one while it is there."""
    return hearth_home() / "grounding" / "weights.json"


def _with_shipped_stages(calibrations: dict[str, Calibration]) -> dict[str, Calibration]:
    """The calibrations, each kind without a relevance stage given the shipped one's: the stage is
    fitted on Hearth's answers, not on the labels a calibration of yours adds (and yours may predate it,
    or have too few answers of a kind to fit that kind its own calibration)."""
    for kind, shipped in shipped_calibrations().items():
        own = for_kind(calibrations, kind)
        if shipped.relevance is not None and own.relevance is None:
            calibrations[kind] = replace(own, relevance=shipped.relevance)
    return calibrations


@lru_cache(maxsize=4)
def _personal(path: str, mtime_ns: int) -> dict[str, Calibration] | None:
    try:
        return _with_shipped_stages(load_calibrations(Path(path)))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # e.g. fitted before an upgrade changed the signals
        log.warning("your calibration is not used, the shipped one is (%s). `hearth train grounding --feedback` "
                    "refits yours.", exc if path in str(exc) else f"{path}: {exc}")
        return None


def personal_calibrations() -> dict[str, Calibration] | None:
    """The user's own calibrations, if they exist and fit the current signals."""
    path = personal_weights()
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        return None
    return _personal(str(path), mtime_ns)


def active_calibrations() -> dict[str, Calibration]:
    """The user's own calibrations when there are usable ones, else the shipped ones."""
    return personal_calibrations() or shipped_calibrations()


@lru_cache(maxsize=1)
def default_scorer() -> model_evidence.TokenScorer:
    return model_evidence.TokenScorer(max_tokens=SCORER_MAX_TOKENS)


def check(answer: str, sources: list[tuple[int, str]], embedder, scorer=None, question: str = "",
          calibration: Calibration | None = None, samples: list[str] | None = None, kind: str = GENERAL,
          chunks: list[str] | None = None) -> Checks:
    """Score every sentence of the answer against (chunk id, text) sources.

    kind names what the answer was asked to do (calibration.KINDS) and picks the calibration
    (active_calibrations: the user's own, else the shipped one) when none is given. scorer defaults to the default model; pass False to leave the
    model signals out (their features are then zero, which the calibration reads as weak evidence).
    samples, re-sampled answers to the same prompt, turn on self-consistency. chunks: the texts the
    sources were cut from when they are focused evidence (pronoun_context), in the same order.
    """
    if scorer is None:
        scorer = default_scorer()
    calibration = calibration or for_kind(active_calibrations(), kind)
    texts = [text for _, text in sources]
    found = signals(answer, texts, embedder, scorer or None, question)
    agreement = None
    if samples and any(r is not None for r in found.rows):
        checked = [_sentence_text(answer, span) for span, r in zip(found.spans, found.rows) if r is not None]
        agreement = consistency(checked, samples, embedder)
    asked = relevance.features(question, answer, embedder, pronoun_context(answer, found, texts, chunks)) \
        if question and kind == QUESTION else None
    return judge(answer, sources, found, calibration, agreement, asked)


def pronoun_context(answer: str, found: Signals, sources: list[str], chunks: list[str] | None = None) -> str:
    """For each answer sentence that opens with a pronoun, the sentence before its receipt's in the
    source's chunk (what "She" or "They" stands for), joined: relevance counts their terms as the
    answer's. chunks: the texts focused sources were cut from (their sentences in another order)."""
    before = []
    for span, receipt in zip(found.spans, found.receipts):
        if receipt is None or not lexical.PRONOUN.match(_sentence_text(answer, span)):
            continue
        evidence = " ".join(sources[receipt["source"]][receipt["start"] : receipt["end"]].split())
        chunk = (chunks or sources)[receipt["source"]]
        texts = [" ".join(chunk[a:b].split()) for a, b in sentence_spans_of(chunk)]
        if evidence in texts[1:]:
            before.append(texts[texts.index(evidence, 1) - 1])
    return " ".join(before)


def judge(answer: str, sources: list[tuple[int, str]], found: Signals, calibration: Calibration,
          agreement: np.ndarray | None = None, asked: dict[str, float] | None = None) -> Checks:
    """The verdicts a calibration gives an answer's signals (one measurement, any calibration).

    agreement: each verifiable sentence's self-consistency with re-sampled answers, if measured.
    asked: the answer's relevance signals (relevance.features), read by the calibration's relevance
    stage when it has one.
    """
    if not found.spans:
        return Checks(None, [], calibration.answer_threshold)
    rows = [r for r in found.rows if r is not None]
    support_values = calibration.sentence_support(np.stack(rows)) if rows else np.zeros(0)
    if agreement is not None:
        support_values = (support_values + agreement) / 2
    supports = iter(support_values)
    results = []
    for (a, b), row, best, receipt in zip(found.spans, found.rows, found.evidence, found.receipts):
        if row is None:
            results.append(SentenceCheck(answer[a:b], a, b, 1.0, "unverifiable"))
            continue
        score = round(float(next(supports)), 4)
        verdict = "supported" if score >= calibration.sentence_threshold else "unsupported"
        if receipt is not None:  # the receipt names the chunk id, not the source's position (signals stay as measured)
            receipt = {"chunk": sources[receipt["source"]][0]} | {k: v for k, v in receipt.items() if k != "source"}
        results.append(SentenceCheck(answer[a:b], a, b, score, verdict, [sources[j][0] for j in best], receipt))
    supported = calibration.answer_support(np.stack(rows)) if rows else None
    if agreement is not None:
        supported = (supported + float(agreement.mean())) / 2
    score, threshold = supported, calibration.answer_threshold
    stage = calibration.relevance
    if stage is not None and asked is not None and supported is not None:
        score, threshold = stage.score(supported, asked), stage.threshold
    checked = [r for r in results if r.verdict != "unverifiable"]
    backed = supported is None or supported >= calibration.answer_threshold
    if not backed and all(r.verdict == "supported" for r in checked):
        # the sources do not back the answer as a whole: show the user the sentence most likely to blame
        # (an answer that fails only the relevance stage keeps its sentences' verdicts: they are about support)
        min(checked, key=lambda r: r.score).verdict = "unsupported"
    rounded = None if score is None else round(score, 4)
    return Checks(rounded, results, threshold, None if supported is None else round(supported, 4),
                  None if asked is None else {k: round(v, 4) for k, v in asked.items()},
                  None if agreement is None else round(float(agreement.mean()), 4))
