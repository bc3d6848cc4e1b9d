"""Model evidence: how much the sources raise the probability of each answer token.

The default model scores the answer twice: once after a prompt holding the sources and the
question, once after the question alone. A token copied or inferred from the sources gains
log-probability from them; a fabricated one does not, and tends to be improbable even with them.
The answer is always re-scored here (rather than reusing the generating backend's stream) so the
signal means the same whichever model wrote the answer, including the labelled data the
calibration was fitted on.
"""

from __future__ import annotations

import logging
import re
from functools import cached_property
from pathlib import Path

import numpy as np

from assistant.chatml import ChatMessage, encode
from assistant.grounding import lexical

log = logging.getLogger(__name__)

FEATURES = ("logprob_mean", "gain_mean", "low_gain", "logprob_low", "word_gain_min", "content_low_gain",
            "novel_surprise")
SCORING_INSTRUCTION = "Answer using only the documents below."
LOW_GAIN = 1.0  # a token the sources raise by less than this many nats is "not explained" by them
LOW_LOGPROB = -3.0
_WORD = re.compile(r"\w+")


class TokenScorer:
    """Per-token log-probabilities of an answer under a causal LM folder (the default model)."""

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int | None = None):
        self.model_dir = Path(model_dir) if model_dir else None
        self.max_tokens = max_tokens

    @cached_property
    def _model(self):
        import torch
        from transformers import AutoModelForCausalLM

        from backends.hf.default_model import ensure_default_model
        from backends.tokenizer import ChatTokenizer
        from retrieval.embedder import cpu_has_fast_bf16

        folder = self.model_dir or ensure_default_model()
        fast_bf16 = torch.cuda.is_available() or cpu_has_fast_bf16()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16 if fast_bf16 else torch.float32)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        log.info("grounding scorer %s on %s", folder, device)
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        return model.to(device).eval(), ChatTokenizer.from_file(folder), device

    def answer_tokens(self, answer: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of the answer text and the character span of each."""
        _, tokenizer, _ = self._model
        enc = tokenizer.backend.encode(answer, add_special_tokens=False)
        return enc.ids, [tuple(o) for o in enc.offsets]

    def logprobs(self, prompt: list[ChatMessage], answer_ids: list[int]) -> np.ndarray:
        """Log-probability of each answer id after the prompt's open assistant turn."""
        import torch

        model, tokenizer, device = self._model
        prefix = encode(prompt, tokenizer, add_generation_prompt=True).ids
        budget = (self.max_tokens or self.context_length) - len(answer_ids)
        if len(prefix) > budget:  # keep the start (system + sources) and the end (question, turn opening)
            head = max(budget // 2, 0)
            prefix = prefix[:head] + prefix[len(prefix) - (budget - head):]
        ids = torch.tensor([prefix + answer_ids], device=device)
        with torch.inference_mode():  # logits only where answer tokens are predicted: the vocabulary
            # projection of every source position would be a fifth of the work
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=len(answer_ids) + 1).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, ids[0, len(prefix):, None])[:, 0].cpu().numpy()

    def score(self, answer: str, sources: list[str], question: str = "") -> "TokenEvidence":
        """Answer token log-probabilities with and without the sources."""
        ids, offsets = self.answer_tokens(answer)
        if not ids:
            return TokenEvidence(np.zeros(0), np.zeros(0), [])
        documents = "\n\n".join(f"Document [{i}]:\n{text}" for i, text in enumerate(sources, 1))
        user = [ChatMessage("user", question)] if question else []
        with_sources = self.logprobs([ChatMessage("system", f"{SCORING_INSTRUCTION}\n\n{documents}")] + user, ids)
        without = self.logprobs(user or [ChatMessage("user", "")], ids)
        return TokenEvidence(with_sources, without, offsets)


class TokenEvidence:
    """Answer tokens' log-probabilities with and without the sources, and their character spans."""

    def __init__(self, with_sources: np.ndarray, without: np.ndarray, offsets: list[tuple[int, int]]):
        self.with_sources = np.asarray(with_sources, dtype=np.float32)
        self.without = np.asarray(without, dtype=np.float32)
        self.offsets = [tuple(o) for o in offsets]

    def to_dict(self) -> dict:
        return {"with_sources": np.round(self.with_sources, 3).tolist(),
                "without": np.round(self.without, 3).tolist(), "offsets": self.offsets}

    @classmethod
    def from_dict(cls, d: dict) -> "TokenEvidence":
        return cls(d["with_sources"], d["without"], d["offsets"])

    def _tokens(self, start: int, end: int) -> list[int]:
        return [i for i, (a, b) in enumerate(self.offsets) if a < end and b > start]

    def features(self, start: int, end: int, answer: str, sources) -> dict[str, float] | None:
        """The model signals of the answer's characters [start, end), or None with no tokens there.

        sources is the lexical SourceIndex: the word-level signals single out the content words
        the sources do not contain and ask how improbable the model found them.
        """
        idx = self._tokens(start, end)
        if not idx:
            return None
        logp = self.with_sources[idx]
        gain = logp - self.without[idx]
        word_gains, novel_surprise = [], []
        for m in _WORD.finditer(answer, start, end):
            terms = lexical.content_terms(m.group())
            tokens = self._tokens(m.start(), m.end())
            if not terms or not tokens:
                continue
            word_gains.append(float((self.with_sources[tokens] - self.without[tokens]).sum()))
            if not all(t in sources.terms for t in terms):
                novel_surprise.append(float(-self.with_sources[tokens].sum()))
        return {
            "logprob_mean": float(logp.mean()),
            "gain_mean": float(gain.mean()),
            "low_gain": float((gain < LOW_GAIN).mean()),
            "logprob_low": float((logp < LOW_LOGPROB).mean()),
            "word_gain_min": min(word_gains) if word_gains else 0.0,
            "content_low_gain": float(np.mean([g < LOW_GAIN for g in word_gains])) if word_gains else 0.0,
            "novel_surprise": float(np.mean(novel_surprise)) if novel_surprise else 0.0,
        }
