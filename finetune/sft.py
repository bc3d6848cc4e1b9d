"""Supervised finetuning (full or LoRA) of an HF model folder or a scratch checkpoint."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from assistant.errors import HearthError, ModelNotFound
from assistant.files import input_file, read_located_records
from backends.hf.default_model import DEFAULT_MODEL_NAME
from backends.hf.peft_quiet import quiet_peft
from backends.registry import resolve_model
from backends.scratch.weights import is_native, load_native, save_native
from backends.tokenizer import ChatTokenizer, copy_tokenizer
from finetune.chat_data import IGNORE, collate, load_examples
from finetune.trainer import STATE_FILE, TrainConfig, Trainer, model_device, to_device

log = logging.getLogger(__name__)
ADAPTER_INFO = "hearth_adapter.json"  # {"base": the folder trained on, or BUNDLED_BASE; "kind": "hf" | "scratch"}
BUNDLED_BASE = "bundled"
HF_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SCRATCH_LORA_TARGETS = ["W_Q", "W_K", "W_V", "W_O"]


@dataclass(frozen=True)
class LoraSettings:
    """The adapter to train: rank, scaling, dropout, and which linear layers get one."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] | None = None  # default: HF_LORA_TARGETS or SCRATCH_LORA_TARGETS
    top_layers: int | None = None  # adapt only the top N layers (cheaper steps: no backward pass below them)


@dataclass(frozen=True)
class SFTConfig:
    """What to finetune, on what data; the optimiser's settings are TrainConfig's (`overrides`)."""

    data: Path
    out: Path
    base: Path | None = None  # an HF folder, scratch checkpoint, .gguf file or registered name; default: the bundled SmolLM2
    lora: LoraSettings | None = None  # None: train all weights
    epochs: float = 3.0
    patience: int | None = 2  # early stop after this many evaluations without improvement
    max_len: int = 512  # tokens per example
    val_data: Path | None = None  # default: hold out 10%
    system: str | None = None  # system prompt added to examples without one
    limit: int | None = None  # use only the first N examples
    resume: Path | None = None  # continue exactly from this checkpoint folder


def load_base(base: Path) -> tuple[torch.nn.Module, str]:
    """(model, kind) where kind is "scratch" for our checkpoints and "hf" for transformers folders."""
    if not (base / "config.json").is_file():
        raise ModelNotFound(f"{base} is not a model folder (no config.json)")
    if is_native(base):
        return load_native(base), "scratch"
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), "hf"


def add_lora(model, kind: str, lora: LoraSettings):
    """The model wrapped by peft with LoRA adapters on lora.targets."""
    from peft import LoraConfig, get_peft_model

    targets = list(lora.targets) if lora.targets else (HF_LORA_TARGETS if kind == "hf" else SCRATCH_LORA_TARGETS)
    layers = None
    if lora.top_layers:  # adapters on the top layers only: the backward pass stops below them
        total = model.config.num_hidden_layers if kind == "hf" else model.config.num_blocks
        layers = list(range(max(total - lora.top_layers, 0), total))
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                        task_type="CAUSAL_LM" if kind == "hf" else None, layers_to_transform=layers,
                        layers_pattern=None if layers is None else ("layers" if kind == "hf" else "blocks"))
    with quiet_peft():
        return get_peft_model(model, config)


def sft_loss(model, batch, kind: str) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over supervised (assistant) tokens."""
    ids, labels, mask = batch
    if kind == "hf":
        # Logits only where a supervised token is predicted: a grounded example's reply is ~3% of it,
        # and the vocabulary projection of every other position is most of a step's cost.
        keep = (labels[:, 1:] != IGNORE).any(dim=0).nonzero()[:, 0]
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        targets = labels[:, keep + 1]
        n = int((targets != IGNORE).sum())
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)
        return loss, n
    logits = model(ids)
    shifted, targets = logits[:, :-1], labels[:, 1:]
    n = int((targets != IGNORE).sum())
    loss = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)
    return loss, n


def sft(config: SFTConfig, overrides: dict | None = None, quiet: bool = False) -> dict:
    """Finetune on a conversation file; writes a LoRA adapter or full weights to config.out."""
    data, val_data, resume, lora = config.data, config.val_data, config.resume, config.lora
    for path in (data, val_data):  # before the base model is prepared or loaded
        if path is not None:
            read_located_records(input_file(path, "training data"))  # a bad file is an error before minutes of set-up
    base = resolve_model(config.base)  # a folder, a .gguf file, a registered name; None: the bundled model
    tokenizer = ChatTokenizer.from_file(base)
    examples = load_examples(Path(data), tokenizer, config.max_len, config.system, config.limit)
    if val_data is not None:
        train, val = examples, load_examples(Path(val_data), tokenizer, config.max_len, config.system)
    elif len(examples) >= 10:
        n_val = max(1, len(examples) // 10)
        train, val = examples[:-n_val], examples[-n_val:]
    else:  # too few to hold any out: validate on the training set (the output says so)
        train, val = examples, examples
        log.warning("only %d examples: validation loss is measured on the training examples", len(examples))

    defaults = TrainConfig(lr=2e-4 if lora else 5e-5, batch_size=4, warmup_steps=10, weight_decay=0.0)
    if resume is not None:
        defaults = TrainConfig(**json.loads((Path(resume) / STATE_FILE).read_text())["config"])
    cfg = replace(defaults, **{k: v for k, v in (overrides or {}).items() if v is not None})
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    if not (overrides or {}).get("max_steps") and resume is None:
        cfg = replace(cfg, max_steps=max(1, int(round(config.epochs * steps_per_epoch))))
    if not (overrides or {}).get("eval_every") and resume is None:
        cfg = replace(cfg, eval_every=steps_per_epoch)
    cfg = replace(cfg, warmup_steps=min(cfg.warmup_steps, max(1, cfg.max_steps // 10)))

    model, kind = load_base(base)
    if lora:
        model = add_lora(model, kind, lora)
        if resume is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model, load_file(Path(resume) / "adapter_model.safetensors"))
    elif resume is not None:
        model, kind = load_base(Path(resume))
    model.train()
    pad = tokenizer.pad_id

    def next_batch(gen: torch.Generator):
        idx = torch.randint(0, len(train), (cfg.batch_size,), generator=gen).tolist()
        return collate([train[i] for i in idx], pad)

    @torch.no_grad()
    def evaluate(m) -> dict:
        total, count = 0.0, 0
        for lo in range(0, len(val), 8):
            loss, n = sft_loss(m, to_device(collate(val[lo : lo + 8], pad), model_device(m)), kind)
            total += float(loss) * n
            count += n
        mean = total / max(count, 1)
        return {"val_loss": mean, "val_ppl": math.exp(min(mean, 50.0))}

    def save_model(m, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if lora:
            m.save_pretrained(folder)
            (folder / "README.md").unlink(missing_ok=True)  # peft's blank model card
            if config.base is None:  # the bundled model: name it, not where this machine keeps it
                adapter_config = json.loads((folder / "adapter_config.json").read_text())
                adapter_config["base_model_name_or_path"] = DEFAULT_MODEL_NAME
                (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
            info = {"base": BUNDLED_BASE if config.base is None else str(base.resolve()), "kind": kind}
            (folder / ADAPTER_INFO).write_text(json.dumps(info))
        elif kind == "hf":
            m.save_pretrained(folder)
        else:
            save_native(m, folder)
        copy_tokenizer(base, folder)

    trainer = Trainer(model, cfg, Path(config.out), loss_fn=lambda m, b: sft_loss(m, b, kind), next_batch=next_batch,
                      evaluate=evaluate, save_model=save_model, patience=config.patience, quiet=quiet)
    if resume is not None:
        trainer.restore(Path(resume))
    before = evaluate(model.eval())
    model.train()
    summary = trainer.run()
    summary["base_val_loss"] = before["val_loss"]
    summary["examples"] = {"train": len(train), "val": len(val)}
    return summary


def merge(adapter: Path, out: Path, base: Path | None = None) -> dict:
    """Write base + LoRA merged weights; report the largest logit difference merged vs adapter."""
    from peft import PeftModel

    adapter = Path(adapter)
    info_path = adapter / ADAPTER_INFO
    if base is None:
        if not info_path.is_file():
            raise HearthError(f"{adapter} does not say which base it was trained on; pass --base")
        named = json.loads(info_path.read_text())["base"]
        base = resolve_model(None if named == BUNDLED_BASE else named)
    model, kind = load_base(Path(base))
    with quiet_peft():
        model = PeftModel.from_pretrained(model, adapter).eval()
    tokenizer = ChatTokenizer.from_file(adapter if (adapter / "tokenizer.json").is_file() else base)
    from assistant import chatml

    probe = torch.tensor([chatml.encode([{"role": "user", "content": "Hello! What can you do?"}], tokenizer, True).ids])

    def logits(m):
        with torch.no_grad():
            o = m(probe)
            return (o.logits if hasattr(o, "logits") else o).float()

    with_adapter = logits(model)
    merged = model.merge_and_unload()
    diff = float((logits(merged) - with_adapter).abs().max())
    out = Path(out)
    if kind == "hf":
        merged.save_pretrained(out)
    else:
        save_native(merged, out)
    copy_tokenizer(Path(base), out)
    return {"out": str(out), "base": str(base), "kind": kind, "max_abs_logit_diff": diff}
