"""The hallucination check (see check.py): lexical, semantic and model signals, calibrated on human labels."""

from assistant.grounding.check import Checks, SentenceCheck, check, is_verifiable, signals

__all__ = ["Checks", "SentenceCheck", "check", "is_verifiable", "signals"]
