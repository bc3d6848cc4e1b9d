"""Language-model evaluation: token-weighted loss, perplexity and bits per character."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from finetune.data import TokenStream


def logits_of(model, x: torch.Tensor) -> torch.Tensor:
    """Logits of our DecoderLanguageModel or of a transformers causal LM."""
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def stream_loss(model, stream: TokenStream, context: int, batch_size: int = 16,
                device: torch.device | str = "cpu") -> dict:
    """Loss over every token of the stream once (full windows, then the remainder)."""
    total, count = 0.0, 0
    batches = list(stream.windows(context, batch_size))
    n_full = ((len(stream.ids) - 1) // context) * context
    if len(stream.ids) - 1 > n_full:  # the tail shorter than one window
        tail = stream.ids[n_full:]
        batches.append((tail[:-1].unsqueeze(0), tail[1:].unsqueeze(0)))
    for x, y in batches:
        logits = logits_of(model, x.to(device))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.to(device).reshape(-1), reduction="sum")
        total += float(loss)
        count += y.numel()
    mean = total / max(count, 1)
    return {"val_loss": mean, "val_ppl": math.exp(min(mean, 50.0)),
            "val_bpc": total / math.log(2) / stream.chars if stream.chars else None, "val_tokens": count}
