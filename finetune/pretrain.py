"""Pretraining the scratch DecoderLanguageModel on plain text."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from assistant.errors import HearthError
from backends.scratch.config import ModelConfig, book, small
from backends.scratch.engine import Engine
from backends.scratch.model import DecoderLanguageModel
from backends.scratch.weights import load_native, save_native
from backends.tokenizer import ChatTokenizer
from finetune.data import TokenStream, read_documents, split_documents
from finetune.lm_eval import stream_loss
from finetune.tokenizer import train_bpe
from finetune.trainer import STATE_FILE, TrainConfig, Trainer, model_device

log = logging.getLogger(__name__)


def shakespeare(vocab_size: int) -> ModelConfig:
    """A ~3.6 M-parameter Llama-style model sized to train in under 30 minutes on 2 CPU cores."""
    return ModelConfig(vocab_size=vocab_size, emb_dim=256, num_heads=4, num_kv_heads=4, num_blocks=4, mlp="swiglu",
                       mlp_hidden=688, mlp_bias=False, rope_pairing="half", tie_embeddings=True, final_norm=True,
                       context_length=128)


# preset -> (model config for a vocabulary size, training defaults)
PRESETS = {
    "book": (book, TrainConfig(lr=1e-3, batch_size=128, warmup_steps=100, max_steps=2000, eval_every=200)),
    "small": (small, TrainConfig(lr=6e-4, batch_size=16, warmup_steps=200, max_steps=5000, eval_every=250)),
    # 1 MB of text overfits a 3.6 M model after ~600 steps (val bpc 2.22 at step 500, 3.30 at 2,400 in
    # a 27-minute run), so the schedule ends at 700 steps (~6 minutes on 2 cores).
    "shakespeare": (shakespeare, TrainConfig(lr=2e-3, batch_size=32, warmup_steps=50, max_steps=700,
                                             eval_every=100, weight_decay=0.1)),
}


def sample_text(model: DecoderLanguageModel, tokenizer: ChatTokenizer, prompt: list[int], n: int = 48) -> str:
    """A greedy continuation (for progress reports)."""
    from backends.base import GenerationParams
    from backends.params import GREEDY

    was_training = model.training
    engine = Engine(model, max_len=min(model.config.context_length, len(prompt) + n + 1),
                    fixed_shape_steps=False)  # a short sample: not worth capturing CUDA graphs
    ids = [s.token_id for s in engine.generate(prompt, GenerationParams(GREEDY, n), frozenset())]
    model.train(was_training)
    return tokenizer.decode(prompt + ids)


def pretrain(data: list[Path], out: Path, preset: str = "book", tokenizer_path: Path | None = None,
             vocab_size: int = 2048, context: int | None = None, overrides: dict | None = None,
             resume: Path | None = None, quiet: bool = False, stop=None) -> dict:
    """Train (or resume) a scratch model on plain-text files; returns the summary."""
    if preset not in PRESETS:
        raise HearthError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    make_config, defaults = PRESETS[preset]
    if resume is not None:  # the run continues with its own settings; only given caps change
        defaults = TrainConfig(**json.loads((Path(resume) / STATE_FILE).read_text())["config"])
    cfg = replace(defaults, **{k: v for k, v in (overrides or {}).items() if v is not None})
    docs = read_documents(data)
    train_docs, val_docs = split_documents(docs)
    out = Path(out)

    if resume is not None:
        tok_file = Path(resume) / "tokenizer.json"
    elif tokenizer_path is not None:
        tok_file = Path(tokenizer_path)
        tok_file = tok_file / "tokenizer.json" if tok_file.is_dir() else tok_file
    else:  # train a tokenizer on the training documents only
        tok_file = Path(tempfile.mkdtemp(prefix="hearth-tok-")) / "tokenizer.json"
        train_bpe(train_docs, vocab_size=vocab_size).save(str(tok_file))
    tokenizer = ChatTokenizer.from_file(tok_file)
    train, val = TokenStream.build(train_docs, tokenizer), TokenStream.build(val_docs, tokenizer)

    if resume is not None:
        model = load_native(Path(resume)).train()
    else:
        config = make_config(tokenizer.vocab_size)
        if context:
            config.context_length = context
        torch.manual_seed(cfg.seed)
        model = DecoderLanguageModel(config)
    context_len = model.config.context_length
    prompt = val.ids[:8].tolist()

    def loss_fn(m, batch):
        x, y = batch
        logits = m(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)), y.numel()

    def on_eval(m, result):
        from tqdm import tqdm

        tqdm.write("  sample: " + sample_text(m, tokenizer, prompt).replace("\n", " | ")[:160])

    def save_model(m, folder):
        save_native(m, folder, tokenizer_json=tok_file)

    trainer = Trainer(
        model, cfg, out, loss_fn=loss_fn,
        next_batch=lambda gen: train.batch(cfg.batch_size, context_len, gen),
        evaluate=lambda m: stream_loss(m, val, context_len, device=model_device(m)),
        save_model=save_model, on_eval=None if quiet else on_eval, quiet=quiet)
    if resume is not None:
        trainer.restore(Path(resume))
    log.info("model %s parameters, %s train / %s val tokens", model.num_parameters(), len(train.ids), len(val.ids))
    return trainer.run(stop=(lambda: stop(trainer)) if stop else None)
