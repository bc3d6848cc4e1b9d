"""Calibration: logistic regressions that turn the signals into probabilities of hallucination.

Each calibration is two small models fitted by `hearth train grounding` on human labels: one
scores a sentence from its own signals, one scores a whole answer from its sentences' signals
(mean, max, min and sum of each, and the number of sentences). `weights.json` holds one
calibration per kind of grounded request: the signals mean different things when a model answers
a question from passages, summarises an article or describes structured data, so each kind with
labelled data gets its own, and `general` (fitted on all of them) serves any other text. A kind's
own models see only a few hundred answers and learn that data's habits (RAGTruth's QA errors are
mostly invented digits), so its scores are averaged with the general ones. Applying them needs only
numpy; fitting uses scikit-learn.

An answer to a question can be supported and still wrong (a source sentence about something else).
The `question` calibration may carry a relevance stage (RelevanceStage, fitted by `hearth train
relevance` on Hearth's own answers to SQuAD questions, labelled by whether they contain the gold
answer): a third logistic regression, on the relevance signals (relevance.py), whose probability
that the answer addresses its question multiplies the answer's support into its final score.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from assistant.config import GROUNDING_GENERAL as GENERAL
from assistant.config import GROUNDING_KINDS as KINDS
from assistant.grounding import lexical, model_evidence, relevance, semantic, support

# Every signal the check measures per sentence, in the order of its rows. A calibration uses those it
# was fitted on (LogisticModel.features): weights fitted before the support model keep working.
SENTENCE_FEATURES = lexical.FEATURES + semantic.FEATURES + model_evidence.FEATURES + support.FEATURES
WITHOUT_SUPPORT = tuple(f for f in SENTENCE_FEATURES if f not in support.FEATURES)

WEIGHTS = Path(__file__).with_name("weights.json")
REGULARISATION = 0.1  # inverse L2 strength; chosen by grouped cross-validation on RAGTruth (0.03-1 tried)
# A kind's own models see a few hundred answers, so they are held closer to zero.
KIND_REGULARISATION = 0.03  # 0.003-0.3 tried (unblended): RAGTruth task means 0.754 to 0.764


def signals_to_fit(support_signal: bool = True) -> tuple[str, ...]:
    """The signals a new calibration is fitted on (`--no-support-signal`: all but the support model's)."""
    return SENTENCE_FEATURES if support_signal else WITHOUT_SUPPORT


def answer_feature_names(sentence_features) -> tuple[str, ...]:
    return tuple(f"{agg}_{name}" for agg in ("mean", "max", "min", "sum") for name in sentence_features) + ("sentences",)


def answer_features(sentence_rows: np.ndarray) -> np.ndarray:
    """The answer-level feature vector from its verifiable sentences' feature rows (any columns)."""
    rows = np.atleast_2d(np.asarray(sentence_rows, dtype=np.float64))
    return np.concatenate([rows.mean(0), rows.max(0), rows.min(0), rows.sum(0), [np.log(len(rows))]])


def columns(rows: np.ndarray, features) -> np.ndarray:
    """The columns of full sentence rows (SENTENCE_FEATURES order) that hold these features."""
    return np.asarray(rows)[..., [SENTENCE_FEATURES.index(f) for f in features]]


@dataclass
class LogisticModel:
    """Standardise, then a logistic regression: P(hallucinated)."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    def probability(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, features: tuple[str, ...], c: float = REGULARISATION,
            weight: np.ndarray | None = None) -> "LogisticModel":
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, dtype=np.float64)
        mean = np.average(x, axis=0, weights=weight)  # weighted as the fit is: weight 2 is the row given twice
        scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weight))
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, np.asarray(y, dtype=int),
                                                            sample_weight=weight)
        return cls(list(features), mean.tolist(), scale.tolist(), model.coef_[0].tolist(), float(model.intercept_[0]))


def best_f1_threshold(support: np.ndarray, hallucinated: np.ndarray) -> float:
    """The support score below which calling an answer unsupported gives the best F1."""
    best, best_f1 = 0.5, -1.0
    for t in np.unique(np.round(support, 3)):
        flagged = support < t
        tp = np.sum(flagged & hallucinated)
        f1 = 2 * tp / (flagged.sum() + hallucinated.sum()) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return best


@dataclass
class RelevanceStage:
    """Whether an answer addresses its question, from the relevance signals (relevance.FEATURES):
    `model` gives P(wrong); an answer's score is its support times 1 - P, so an answer fails when its
    sources do not back it or when it answers something else, and the support keeps its weight even
    where the answers it was fitted on were all copied from their sources. `threshold`: the score
    below which the answer is called unsupported."""

    model: LogisticModel
    threshold: float
    fitted_on: str = ""

    def score(self, answer_support: float, signals: dict[str, float]) -> float:
        x = np.array([[signals[name] for name in relevance.FEATURES]])
        return float(answer_support * (1.0 - self.model.probability(x)[0]))

    @classmethod
    def fit(cls, x: np.ndarray, wrong: np.ndarray, support: np.ndarray, fitted_on: str = "",
            c: float = REGULARISATION) -> "RelevanceStage":
        """x: the relevance signals of each answer; wrong: whether it missed the gold answer; support:
        its support by the sources alone (for the threshold)."""
        model = LogisticModel.fit(x, wrong, relevance.FEATURES, c)
        scores = np.asarray(support) * (1.0 - model.probability(x))
        return cls(model, best_f1_threshold(scores, np.asarray(wrong, bool)), fitted_on)

    @classmethod
    def from_dict(cls, data: dict) -> "RelevanceStage":
        model = LogisticModel(**data["model"])
        if tuple(model.features) != relevance.FEATURES:
            raise ValueError("the relevance stage was fitted on other signals; refit with `hearth train relevance`.")
        return cls(model, data["threshold"], data.get("fitted_on", ""))


@dataclass
class Calibration:
    """Both models and the support thresholds below which a sentence or answer is unsupported.

    A kind's calibration is blended with the general one (`base`): its supports are the mean of
    its own models' and the general models', and its thresholds are fitted on that mean.
    """

    sentence: LogisticModel
    answer: LogisticModel
    sentence_threshold: float
    answer_threshold: float
    fitted_on: str = ""
    base: "Calibration | None" = field(default=None, repr=False)
    relevance: RelevanceStage | None = None

    def sentence_support(self, rows: np.ndarray) -> np.ndarray:
        """Support of each sentence from its full signal rows."""
        own = 1.0 - self.sentence.probability(columns(rows, self.sentence.features))
        return own if self.base is None else (own + self.base.sentence_support(rows)) / 2

    def answer_support(self, rows: np.ndarray) -> float:
        """Support of an answer from its verifiable sentences' full signal rows."""
        own = float(1.0 - self.answer.probability(answer_features(columns(rows, self.sentence.features))[None, :])[0])
        return own if self.base is None else (own + self.base.answer_support(rows)) / 2

    @classmethod
    def fit(cls, sentence_x, sentence_y, answers: list[np.ndarray], answer_y, fitted_on: str = "",
            c: float = REGULARISATION, base: "Calibration | None" = None, sentence_weight: np.ndarray | None = None,
            answer_weight: np.ndarray | None = None, features: tuple[str, ...] = SENTENCE_FEATURES) -> "Calibration":
        """Fit both models on these of the signals; rows are full (SENTENCE_FEATURES columns),
        answers one (n_sentences, n_signals) array per labelled answer; the weights say how much
        each sentence and answer counts (default: alike)."""
        sentence_y, answer_y = np.asarray(sentence_y, bool), np.asarray(answer_y, bool)
        sentence = LogisticModel.fit(columns(sentence_x, features), sentence_y, features, c, sentence_weight)
        answer = LogisticModel.fit(np.stack([answer_features(columns(a, features)) for a in answers]), answer_y,
                                   answer_feature_names(features), c, answer_weight)
        made = cls(sentence, answer, 0.5, 0.5, fitted_on, base)
        made.sentence_threshold = best_f1_threshold(made.sentence_support(np.asarray(sentence_x)), sentence_y)
        made.answer_threshold = best_f1_threshold(np.array([made.answer_support(a) for a in answers]), answer_y)
        return made

    def to_dict(self) -> dict:
        data = asdict(self) | {"blended": self.base is not None}
        del data["base"]
        if self.relevance is None:
            del data["relevance"]
        return data

    @classmethod
    def from_dict(cls, data: dict, base: "Calibration | None" = None) -> "Calibration":
        made = cls(LogisticModel(**data["sentence"]), LogisticModel(**data["answer"]), data["sentence_threshold"],
                   data["answer_threshold"], data.get("fitted_on", ""), base if data.get("blended") else None,
                   RelevanceStage.from_dict(data["relevance"]) if data.get("relevance") else None)
        if not set(made.sentence.features) <= set(SENTENCE_FEATURES) or \
                tuple(made.answer.features) != answer_feature_names(made.sentence.features):
            raise ValueError("the calibration was fitted on other signals; refit with `hearth train grounding`.")
        return made


def save_calibrations(calibrations: dict[str, Calibration], path: Path = WEIGHTS) -> None:
    """Write one calibration per kind; `general` is required, it answers for kinds left out."""
    if GENERAL not in calibrations or not set(calibrations) <= set(KINDS):
        raise ValueError(f"calibrations must include {GENERAL!r} and use only the kinds {', '.join(KINDS)}")
    path.write_text(json.dumps({k: c.to_dict() for k, c in calibrations.items()}, indent=1) + "\n", encoding="utf-8")


def load_calibrations(path: Path = WEIGHTS) -> dict[str, Calibration]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if GENERAL not in data:
        raise ValueError(f"{path} has no {GENERAL!r} calibration; refit with `hearth train grounding`.")
    try:
        general = Calibration.from_dict(data[GENERAL])
        return {kind: general if kind == GENERAL else Calibration.from_dict(d, general) for kind, d in data.items()}
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def for_kind(calibrations: dict[str, Calibration], kind: str) -> Calibration:
    """The kind's own calibration, or the general one when the kind has none."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    return calibrations.get(kind, calibrations[GENERAL])
