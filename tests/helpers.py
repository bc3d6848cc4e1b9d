"""Builders for tiny real models and tokenizers that tests create on the fly."""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch

from finetune.tokenizer import train_bpe

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Hearth is a private assistant that runs on your own computer.",
    "def add(a, b):\n    return a + b\n",
    "Le café est très bon. 東京は日本の首都です。",
    "system user assistant You are a helpful assistant.",
] * 20


def build_tokenizer(path: Path, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE with ChatML specials and save tokenizer.json in `path`."""
    path.mkdir(parents=True, exist_ok=True)
    train_bpe(CORPUS, vocab_size=vocab_size).save(str(path / "tokenizer.json"))
    return path


def build_tiny_llama(path: Path, seed: int = 0, context: int = 256) -> Path:
    """A randomly initialised 2-layer Llama (GQA) saved as a HF folder with our tokenizer."""
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tokenizer(path)
    vocab = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab_size()
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


class ScriptedBackend:
    """A backend that replies with fixed texts in turn (for a deterministic answer to check).

    It uses a real tokenizer and yields real token ids; `prompts` records what it was asked.
    """

    name = "scripted"
    model_id = "scripted"
    precision = "fp32"
    adapter = None

    def __init__(self, tokenizer, replies: list[str], context_length: int = 4096):
        self.tokenizer = tokenizer
        self.replies = list(replies)
        self.context_length = context_length
        self.prompts: list[str] = []

    def stream(self, prompt_ids, params, cancel=None):
        from backends.base import TokenStep

        self.prompts.append(self.tokenizer.decode(prompt_ids, skip_special=False))
        reply = self.replies.pop(0)
        for token in self.tokenizer.encode(reply) + [self.tokenizer.im_end_id]:
            yield TokenStep(token, 0.0)


@dataclass
class Run:
    """What a `hearth` command did: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def hearth(*args, home: Path | None = None, stdin: str | None = None, check: bool = True) -> Run:
    """Run the `hearth` command in this process through `main(argv)`, output captured.

    HEARTH_HOME is `home` when given, else the test's own (the autouse fixture's)."""
    from assistant.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, os.environ.get("HEARTH_HOME")
    sys.stdin = io.StringIO(stdin or "")
    if home is not None:
        os.environ["HEARTH_HOME"] = str(home)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        sys.stdin = saved[0]
        if saved[1] is None:
            os.environ.pop("HEARTH_HOME", None)
        else:
            os.environ["HEARTH_HOME"] = saved[1]
    run = Run(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"hearth {args} failed ({code}):\n{run.stderr}")
    return run
