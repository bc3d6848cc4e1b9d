"""hearth train tokenizer | pretrain | sft | grounding | support | merge."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from assistant.cli.output import emit, say
from assistant.errors import HearthError


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _out(args: argparse.Namespace) -> Path:
    """Where a run writes: --out, or the checkpoint it resumes."""
    if not (args.out or args.resume):
        raise HearthError("say where to write the model: --out DIR (or --resume DIR to continue a run)")
    return Path(args.out or args.resume)


def add_train_options(q) -> None:
    """Options that map onto finetune.trainer.TrainConfig fields (dest = field name)."""
    q.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    q.add_argument("--time-budget", type=float, dest="time_budget_min", metavar="MINUTES",
                   help="stop after this long (then evaluate and save)")
    q.add_argument("--lr", type=float, help="peak learning rate")
    q.add_argument("--batch-size", type=int, help="sequences per micro-batch")
    q.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    q.add_argument("--eval-every", type=int, help="evaluate (and checkpoint) every N steps")
    q.add_argument("--seed", type=int, help="seed for initialisation and batch order")
    q.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    q.add_argument("--resume", metavar="DIR", help="continue exactly from a checkpoint folder")
    q.add_argument("--json", action="store_true", help="end with one JSON summary line")


def train_overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line."""
    from finetune.trainer import TrainConfig

    return {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a tokenizer, pretrain, finetune (SFT/LoRA), merge adapters")
    ts = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    q = ts.add_parser("tokenizer", help="byte-level BPE with the ChatML special tokens")
    q.add_argument("files", nargs="+", metavar="FILE")
    q.add_argument("--vocab-size", type=int, required=True)
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_tokenizer)

    q = ts.add_parser("pretrain", help="train the scratch decoder on plain text")
    q.add_argument("--data", nargs="+", required=True, metavar="FILE", help="text files (one file: blank-line blocks are documents)")
    q.add_argument("--preset", default="book", choices=("book", "small", "shakespeare"), help="model and training preset")
    q.add_argument("--out", metavar="DIR", help="checkpoint folder")
    q.add_argument("--tokenizer", metavar="DIR", help="tokenizer.json to use (default: train one on the data)")
    q.add_argument("--vocab-size", type=int, default=2048, help="vocabulary when training a tokenizer (default %(default)s)")
    q.add_argument("--context", type=int, help="override the preset's context length")
    add_train_options(q)
    q.set_defaults(func=cmd_pretrain)

    q = ts.add_parser("sft", help="supervised finetuning, full or LoRA")
    q.add_argument("--data", required=True, metavar="FILE", help="JSONL/JSON: {messages}, {instruction, solution} or Alpaca")
    q.add_argument("--base", metavar="MODEL", help="HF folder, scratch checkpoint, .gguf file or registered model name (default: the bundled SmolLM2)")
    q.add_argument("--out", metavar="DIR", help="adapter or model folder")
    q.add_argument("--lora", action="store_true", help="train a LoRA adapter (peft) instead of all weights")
    q.add_argument("--r", type=int, default=16, help="LoRA rank (default %(default)s)")
    q.add_argument("--alpha", type=int, default=32, help="LoRA alpha (default %(default)s)")
    q.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (default %(default)s)")
    q.add_argument("--target-modules", help="comma-separated (default q/k/v/o_proj for HF, W_Q/W_K/W_V/W_O for scratch)")
    q.add_argument("--lora-layers", type=int, metavar="N",
                   help="adapt only the top N layers (default: all); a step then skips the backward pass below them")
    q.add_argument("--epochs", type=float, default=3.0, help="passes over the data (default %(default)s)")
    q.add_argument("--patience", type=int, default=2, help="early stop after N evaluations without improvement")
    q.add_argument("--max-len", type=int, default=512, help="tokens per example (default %(default)s)")
    q.add_argument("--val-data", metavar="FILE", help="validation file (default: hold out 10%%)")
    q.add_argument("--system", help="system prompt added to examples without one")
    q.add_argument("--limit", type=int, help="use only the first N examples")
    add_train_options(q)
    q.set_defaults(func=cmd_sft)

    q = ts.add_parser("grounding", help="fit the hallucination check's calibration on human labels",
                      description="Fit the check's calibration on RAGTruth (and WiCE's dev claims). With "
                                  "--feedback, the verdicts you labelled in the chat (/verdict N right|wrong) "
                                  "are added, and the result is your own calibration, which the check uses "
                                  "from then on (delete the file it names to go back to the shipped one). "
                                  "Every answer is measured by the default model once (seconds each; cached).")
    q.add_argument("--ragtruth", required=True, metavar="FILE", help="RAGTruth JSONL with source_info and labels")
    q.add_argument("--wice", metavar="DIR", help="WiCE folder: its claim_dev.jsonl is added to the fit")
    q.add_argument("--feedback", action="store_true",
                   help="add the sentence verdicts you labelled in the chat (stored with the replies)")
    q.add_argument("--feedback-weight", type=float, default=5.0, metavar="W",
                   help="how many public labels each of yours counts as (default %(default)s)")
    q.add_argument("--no-support-signal", action="store_true",
                   help="fit without the support model's signals (as the shipped weights.json was)")
    q.add_argument("--out", help="where to write the weights (default: the shipped assistant/grounding/weights.json; "
                                 "with --feedback, your own calibration under HEARTH_HOME/grounding/)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_grounding)

    q = ts.add_parser("relevance", help="fit the check's relevance stage on scored grounded answers",
                      description="Fit the relevance stage of the check's `question` calibration: whether a "
                                  "grounded answer addresses its question (the share of the question's terms it "
                                  "repeats, its cosine to the question), which multiplies its support; fitted on "
                                  "answers that `hearth eval answers --rows FILE` kept, labelled by whether they "
                                  "contain the gold answer. Answers to articles you evaluate on must not be in "
                                  "the rows.")
    q.add_argument("--squad", required=True, metavar="FILE", help="the SQuAD file the rows answered")
    q.add_argument("--rows", nargs="+", required=True, metavar="FILE", help="rows kept by `hearth eval answers --rows`")
    q.add_argument("--out", help="the calibrations to add the stage to (default: the shipped "
                                 "assistant/grounding/weights.json)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_relevance)

    q = ts.add_parser("support", help="train the check's support model (does this passage support this claim?)",
                      description="Train the support model: LoRA on the bundled MiniLM encoder plus a linear head, "
                                  "on human-labelled source/claim pairs (SummaC-style claims JSONL with "
                                  "documents.jsonl beside it, or TRUE-style CSV with grounding, generated_text, "
                                  "label). Pairs are split into train and validation by source document.")
    q.add_argument("--data", nargs="+", required=True, metavar="FILE", help="labelled claim files")
    q.add_argument("--exclude", nargs="*", default=[], metavar="FILE",
                   help="claim files whose source documents must not be trained on (e.g. a test cut)")
    q.add_argument("--out", metavar="DIR", help="where the model is written")
    q.add_argument("--limit", type=int, help="at most N claims from each file (a seeded sample)")
    q.add_argument("--epochs", type=float, default=1.0, help="passes over the pairs (default %(default)s)")
    q.add_argument("--r", type=int, default=16, help="LoRA rank (default %(default)s)")
    q.add_argument("--alpha", type=int, default=32, help="LoRA alpha (default %(default)s)")
    q.add_argument("--max-len", type=int, default=192, help="tokens of claim + passage (default %(default)s)")
    add_train_options(q)
    q.set_defaults(func=cmd_support)

    q = ts.add_parser("merge", help="merge a LoRA adapter into its base weights")
    q.add_argument("--adapter", required=True, metavar="DIR")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--base", metavar="MODEL", help="base model (default: the one the adapter was trained on)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_merge)


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from finetune.data import read_documents
    from finetune.tokenizer import train_bpe

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(read_documents([Path(f) for f in args.files]) if len(args.files) == 1 else
                    [Path(f).read_text(encoding="utf-8", errors="replace") for f in args.files], args.vocab_size)
    tok.save(str(out / "tokenizer.json"))
    emit({"out": str(out), "vocab_size": tok.get_vocab_size()}, args.json)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from finetune.pretrain import pretrain

    result = pretrain([Path(f) for f in args.data], _out(args), preset=args.preset,
                      tokenizer_path=_path(args.tokenizer), vocab_size=args.vocab_size, context=args.context,
                      overrides=train_overrides(args), resume=_path(args.resume), quiet=args.json)
    emit(result, args.json)
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from finetune.sft import LoraSettings, SFTConfig, sft

    lora = LoraSettings(r=args.r, alpha=args.alpha, dropout=args.dropout,
                        targets=tuple(args.target_modules.split(",")) if args.target_modules else None,
                        top_layers=args.lora_layers)
    if args.lora_layers is not None and (args.lora_layers < 1 or not args.lora):
        raise HearthError("--lora-layers takes N >= 1, with --lora")
    config = SFTConfig(data=Path(args.data), out=_out(args), base=_path(args.base),
                       lora=lora if args.lora else None, epochs=args.epochs, patience=args.patience,
                       max_len=args.max_len, val_data=_path(args.val_data), system=args.system, limit=args.limit,
                       resume=_path(args.resume))
    emit(sft(config, train_overrides(args), quiet=args.json), args.json)
    return 0


def cmd_grounding(args: argparse.Namespace) -> int:
    from assistant.bench.grounding import fit_and_save
    from assistant.config import GROUNDING_GENERAL
    from assistant.grounding.calibration import WEIGHTS
    from assistant.grounding.check import personal_weights

    examples = None
    if args.feedback:
        from assistant.grounding.feedback import required_examples
        from assistant.store import Store

        examples = required_examples(Store())
        if args.feedback_weight <= 0:
            raise HearthError("--feedback-weight must be above 0")
    out = Path(args.out) if args.out else personal_weights() if args.feedback else WEIGHTS
    from assistant.grounding.calibration import signals_to_fit

    calibrations = fit_and_save(Path(args.ragtruth), _path(args.wice), out, examples, args.feedback_weight, report=say,
                                features=signals_to_fit(not args.no_support_signal))
    if args.feedback:
        say(f"the check now uses {out} (fitted with your labels); delete it to go back to the shipped calibration")
    emit({"out": str(out), "fitted_on": calibrations[GROUNDING_GENERAL].fitted_on,
          "feedback_replies": len(examples or []),
          "answer_threshold": {k: c.answer_threshold for k, c in calibrations.items()},
          "sentence_threshold": {k: c.sentence_threshold for k, c in calibrations.items()}}, args.json)
    return 0


def cmd_relevance(args: argparse.Namespace) -> int:
    from assistant.bench.answers import fit_relevance
    from assistant.files import input_file
    from assistant.grounding.calibration import WEIGHTS

    rows = [input_file(Path(f), "the rows file") for f in args.rows]
    squad = input_file(Path(args.squad), "the SQuAD file")
    emit(fit_relevance(squad, rows, Path(args.out) if args.out else WEIGHTS, report=say), args.json)
    return 0


def cmd_support(args: argparse.Namespace) -> int:
    from finetune.support import SupportConfig, train_support

    if args.limit is not None and args.limit < 1:
        raise HearthError("--limit takes N >= 1")
    config = SupportConfig(data=tuple(Path(f) for f in args.data), out=_out(args),
                           exclude=tuple(Path(f) for f in args.exclude), limit=args.limit, epochs=args.epochs,
                           r=args.r, alpha=args.alpha, max_len=args.max_len, resume=_path(args.resume))
    emit(train_support(config, train_overrides(args), quiet=args.json, report=say), args.json)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from finetune.sft import merge

    result = merge(Path(args.adapter), Path(args.out), base=_path(args.base))
    say(f"merged vs adapter: max |logit difference| = {result['max_abs_logit_diff']:.2e}")
    emit(result, args.json)
    return 0
