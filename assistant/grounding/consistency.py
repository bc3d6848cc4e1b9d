"""Self-consistency (SelfCheckGPT's idea): a fact the model knows comes back when it answers again.

Off by default: it costs N extra generations. Each answer sentence is compared with N re-sampled
answers; its consistency is the mean over samples of how well the sample supports it (half lexical
coverage, half the cosine to the sample's closest sentence). This signal is not in the fitted
calibration; when on, it is averaged with the calibrated support.
"""

from __future__ import annotations

import numpy as np

from assistant.grounding import lexical
from assistant.grounding.split import split_sentences


def consistency(answer_sentences: list[str], samples: list[str], embedder) -> np.ndarray:
    """Per sentence, in [0, 1]: how consistently the samples say the same thing."""
    if not answer_sentences or not samples:
        return np.ones(len(answer_sentences))
    per_sample = []
    for sample in samples:
        index = lexical.SourceIndex([sample])
        pieces = [sample[a:b] for a, b in split_sentences(sample)] or [sample]
        vectors = embedder.encode(answer_sentences + pieces)
        cosine = (vectors[: len(answer_sentences)] @ vectors[len(answer_sentences):].T).max(axis=1)
        coverage = np.array([(lexical.lexical_features(s, index) or {"coverage": 0.0})["coverage"]
                             for s in answer_sentences])
        per_sample.append(0.5 * coverage + 0.5 * np.clip(cosine, 0.0, 1.0))
    return np.mean(per_sample, axis=0)
