"""Train the support model (assistant/grounding/support.py): LoRA on the bundled MiniLM encoder and a
linear head, binary cross-entropy on (claim sentence, source window) pairs, through the shared Trainer
(progress, evaluation, --max-steps, --time-budget, exact --resume)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from assistant.errors import HearthError
from assistant.grounding import support
from finetune.support_data import Pair, load_labelled, make_pairs, split
from finetune.trainer import STATE_FILE, TrainConfig, Trainer, model_device

MAX_VALIDATION = 800  # validation pairs scored at each evaluation (a seeded sample when there are more)


@dataclass(frozen=True)
class SupportConfig:
    data: tuple[Path, ...]
    out: Path
    exclude: tuple[Path, ...] = ()
    limit: int | None = None  # claims per data file
    epochs: float = 1.0
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    max_len: int = support.MAX_LEN
    resume: Path | None = None


def auroc(scores, labels) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < sum(labels) < len(labels) else None


def train_support(config: SupportConfig, overrides: dict | None = None, quiet: bool = False,
                  report=print) -> dict:
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    seed = (overrides or {}).get("seed") or 0
    labelled = load_labelled(list(config.data), list(config.exclude), config.limit, seed)
    started = time.perf_counter()
    pairs = make_pairs(labelled, report=report)
    prepared_s = time.perf_counter() - started
    train, val = split(pairs)
    if not train or not val or len({p.supported for p in train}) < 2:
        raise HearthError(f"{len(train)} training and {len(val)} validation pairs, not both labels: add data")
    if len(val) > MAX_VALIDATION:
        val = [val[i] for i in torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:MAX_VALIDATION]]

    defaults = TrainConfig(lr=5e-4, batch_size=16, warmup_steps=50, weight_decay=0.0)
    if config.resume is not None:
        defaults = TrainConfig(**json.loads((config.resume / STATE_FILE).read_text())["config"])
    cfg = replace(defaults, **{k: v for k, v in (overrides or {}).items() if v is not None})
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    if config.resume is None:
        if not (overrides or {}).get("max_steps"):
            cfg = replace(cfg, max_steps=max(1, int(round(config.epochs * steps_per_epoch))))
        if not (overrides or {}).get("eval_every"):
            cfg = replace(cfg, eval_every=max(1, min(steps_per_epoch, 250)))
        cfg = replace(cfg, warmup_steps=min(cfg.warmup_steps, max(1, cfg.max_steps // 10)))

    torch.manual_seed(cfg.seed)
    net = support.new_net(config.r, config.alpha, config.dropout)
    if config.resume is not None:
        support.load_trainable(net, load_file(config.resume / support.WEIGHTS_FILE))
    tokenizer = AutoTokenizer.from_pretrained(support.encoder_folder())

    def encode(batch: list[Pair]):
        enc = support.encode_pairs(tokenizer, [p.claim for p in batch], [p.passage for p in batch], config.max_len)
        labels = torch.tensor([float(p.supported) for p in batch])
        return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels

    def loss_fn(model, batch):
        ids, mask, types, labels = batch
        logits = model(ids, mask, types)
        return F.binary_cross_entropy_with_logits(logits, labels), int(mask.sum())

    # A batch is a run of neighbours in length order from a random start: padding to the longest
    # pair of a mixed batch (short PAWS pairs next to news windows) doubled the cost of a step.
    by_length = sorted(train, key=lambda p: (len(p.claim) + len(p.passage), p.claim))

    def next_batch(gen: torch.Generator):
        start = int(torch.randint(0, max(1, len(by_length) - cfg.batch_size + 1), (1,), generator=gen))
        return encode(by_length[start : start + cfg.batch_size])

    @torch.no_grad()
    def evaluate(model) -> dict:
        total, scores = 0.0, []
        for lo in range(0, len(val), 32):
            chunk = val[lo : lo + 32]
            ids, mask, types, labels = (t.to(model_device(model)) for t in encode(chunk))
            logits = model(ids, mask, types)
            total += float(F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"))
            scores.extend(torch.sigmoid(logits).tolist())
        labels = [p.supported for p in val]
        accuracy = sum((s >= 0.5) == y for s, y in zip(scores, labels)) / len(val)
        result = {"val_loss": total / len(val), "val_accuracy": accuracy}
        value = auroc(scores, labels)
        if value is not None:
            result["val_auroc"] = value
        return result

    def save_model(model, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(support.trainable_state(model), folder / support.WEIGHTS_FILE)
        origins = sorted({p.origin for p in train})
        (folder / support.CONFIG_FILE).write_text(json.dumps({
            "base": "all-MiniLM-L6-v2", "r": config.r, "alpha": config.alpha, "max_len": config.max_len,
            "window_radius": support.WINDOW_RADIUS, "trained_on": origins,
            "pairs": {"train": len(train), "val": len(val)}}, indent=1))

    trainer = Trainer(net, cfg, config.out, loss_fn=loss_fn, next_batch=next_batch, evaluate=evaluate,
                      save_model=save_model, quiet=quiet)
    if config.resume is not None:
        trainer.restore(config.resume)
    summary = trainer.run()
    summary.update({k: v for k, v in trainer.last_eval.items() if k not in summary})
    summary["pairs"] = {"train": len(train), "val": len(val), "supported_share":
                        round(sum(p.supported for p in train) / len(train), 3)}
    summary["prepare_s"] = round(prepared_s, 1)
    summary["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()
                         if k not in ("data", "exclude", "out", "resume")}
    return summary
