"""hearth eval perplexity | grounding | answers | retrieval: quality on labelled data."""

from __future__ import annotations

import argparse
from pathlib import Path

from assistant.cli.options import add_model_options, add_sampling_options, add_sources_option, chat_settings
from assistant.cli.output import emit, quiet, say
from assistant.errors import HearthError


def _existing(path: str, what: str) -> Path:
    if not Path(path).exists():
        raise HearthError(f"no {what} at {path}")
    return Path(path)


def register(sub) -> None:
    p = sub.add_parser("eval", help="quality evaluations on labelled data")
    es = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    q = es.add_parser("perplexity", help="token-weighted perplexity of a model over text files")
    q.add_argument("--model", required=True, metavar="DIR")
    q.add_argument("--data", nargs="+", required=True, metavar="FILE")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_perplexity)

    q = es.add_parser("grounding", help="AUROC / precision / recall / F1 of the hallucination check on human labels")
    q.add_argument("--data", required=True, metavar="FILE",
                   help="RAGTruth JSONL, or WiCE's claim_test.jsonl (or its folder; claim_dev.jsonl fits the calibration)")
    q.add_argument("--format", required=True, choices=("ragtruth", "wice"))
    q.add_argument("--shipped", action="store_true",
                   help="score with the shipped calibration instead of refitting (refused for data it was fitted on)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_grounding)

    q = es.add_parser("answers", help="grounded answers end to end on SQuAD: gold answer found, refusals, loops, support")
    q.add_argument("--squad", required=True, metavar="FILE", help="SQuAD 1.1 or 2.0 JSON file (2.0 adds unanswerable questions)")
    q.add_argument("--limit", type=int, default=100, help="questions to ask, a seeded sample (default %(default)s)")
    q.add_argument("--sample-seed", type=int, default=0, help="which questions (default %(default)s)")
    add_sources_option(q)
    add_model_options(q)
    add_sampling_options(q.add_argument_group("generation"))
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_answers)

    q = es.add_parser("retrieval", help="Recall@k / MRR of dense, keyword and hybrid search on SQuAD")
    q.add_argument("--squad", required=True, metavar="FILE", help="SQuAD-format JSON file")
    q.add_argument("--limit", type=int, help="ask only this many questions (a seeded sample)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_retrieval)


def cmd_perplexity(args: argparse.Namespace) -> int:
    from finetune.evaluate import perplexity

    emit(perplexity(Path(args.model), [Path(f) for f in args.data]), args.json)
    return 0


def cmd_grounding(args: argparse.Namespace) -> int:
    from assistant.bench.grounding import evaluate

    data = _existing(args.data, "data")
    emit(evaluate(data, args.format, report=quiet if args.json else say, shipped=args.shipped), args.json)
    return 0


def cmd_answers(args: argparse.Namespace) -> int:
    from assistant.bench.answers import eval_answers
    from backends.registry import load_for

    squad = _existing(args.squad, "SQuAD file")
    if args.limit < 1:
        raise HearthError("--limit must be at least 1")
    if args.seed is None:
        args.seed = 0  # an evaluation is reproducible unless told otherwise
    settings = chat_settings(args)
    backend = load_for(settings, say)
    emit(eval_answers(squad, settings, backend, limit=args.limit, seed=args.sample_seed,
                      report=quiet if args.json else say), args.json)
    return 0


def cmd_retrieval(args: argparse.Namespace) -> int:
    from assistant.bench.retrieval import eval_squad

    squad = _existing(args.squad, "SQuAD file")
    emit(eval_squad(squad, limit=args.limit, report=quiet if args.json else say), args.json)
    return 0
