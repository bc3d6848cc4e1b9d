"""What decides how tokens are chosen: sampling parameters and the named presets.

Plain data with no torch import, so the command line and the chat UI can build and validate
settings without loading the model stack.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

@dataclass(frozen=True)
class SamplingParams:
    """How to choose the next token."""

    # Defaults are the "precise" preset: small models answer facts far more reliably at a low
    # temperature (SmolLM2-135M: 10/10 seeds say Paris at T 0.2, 7/10 at T 0.7), and at a low
    # temperature they loop: a mild repetition penalty stopped that (SQuAD grounded answers cut at
    # max tokens: 22% without it, 2.5% at 1.1; docs/BENCHMARKS.md, `hearth eval answers`).
    temperature: float = 0.2
    top_k: int = 10
    top_p: float = 1.0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.1
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SamplingParams":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


GREEDY = SamplingParams(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)

PRESETS = {
    "precise": SamplingParams(),  # the defaults
    "balanced": SamplingParams(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.0),
    "creative": SamplingParams(temperature=1.0, top_k=200, top_p=0.95, repetition_penalty=1.0),
}

DEFAULT_PRESET = "precise"
