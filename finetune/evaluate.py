"""`hearth eval perplexity`: token-weighted perplexity of a model over text files."""

from __future__ import annotations

from pathlib import Path

import torch

from assistant.files import input_file
from backends.tokenizer import ChatTokenizer
from finetune.data import TokenStream
from finetune.lm_eval import stream_loss
from finetune.sft import load_base


def perplexity(model_dir: Path, files: list[Path], context: int = 1024) -> dict:
    """Loss, perplexity and bits per character over every token of the files."""
    docs = []
    for f in files:
        input_file(f, "evaluation text")
        docs.append(Path(f).read_text(encoding="utf-8", errors="replace"))
    model, kind = load_base(Path(model_dir))
    model.eval()
    tokenizer = ChatTokenizer.from_file(model_dir)
    limit = getattr(getattr(model, "config", None), "context_length", None) or \
        getattr(model.config, "max_position_embeddings", context)
    with torch.no_grad():
        result = stream_loss(model, TokenStream.build(docs, tokenizer), min(context, limit), batch_size=4)
    return {"model": str(model_dir), "kind": kind, "tokens": result["val_tokens"], "loss": result["val_loss"],
            "ppl": result["val_ppl"], "bpc": result["val_bpc"]}
