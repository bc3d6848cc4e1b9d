"""hearth data grounded-sft: training data built from documents, for `hearth train sft`."""

from __future__ import annotations

import argparse
from pathlib import Path

from assistant.cli.output import emit, quiet, say
from assistant.config import DEFAULT_K


def register(sub) -> None:
    p = sub.add_parser("data", help="build training data (for hearth train sft)")
    ds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = ds.add_parser(
        "grounded-sft", help="grounded-answer conversations from a SQuAD-format file",
        description="Each question is asked of a collection of the file's own articles exactly as "
        "`hearth ask --docs` asks it (same retrieval, numbered sources and system prompt). The reply is the "
        "gold paragraph's answer sentence cited [n] when retrieval found it; the refusal \"I don't know based "
        "on the documents.\" when the gold paragraph is left out of the sources (a share of the questions), "
        "when the question was changed so that its sources no longer answer it (another share), and for SQuAD "
        "2.0's unanswerable questions. Writes JSONL of {\"messages\": [...]}.")
    q.add_argument("--squad", required=True, type=Path, metavar="FILE", help="SQuAD 1.1 or 2.0 JSON")
    q.add_argument("--out", required=True, type=Path, metavar="FILE", help="the JSONL file to write")
    q.add_argument("--exclude", action="append", default=[], type=Path, metavar="FILE",
                   help="leave out every article of this SQuAD file (e.g. your evaluation set); repeatable")
    q.add_argument("--limit", type=int, metavar="N", help="stop after N examples")
    q.add_argument("--seed", type=int, default=0, help="order of the questions and which lose their gold paragraph")
    q.add_argument("--gold-removed-share", type=float, default=0.3, metavar="P",
                   help="share of answerable questions asked without their gold paragraph, to be refused (default 0.3)")
    q.add_argument("--perturbed-share", type=float, default=0.0, metavar="P",
                   help="share of answerable questions changed so that their sources no longer answer them "
                   "(a name or number swapped for another of the article's, or a negation), to be refused "
                   "(default 0)")
    q.add_argument("-k", "--sources", type=int, default=DEFAULT_K, dest="k",
                   help=f"sources per question, as ask --docs -k (default {DEFAULT_K})")
    q.add_argument("--min-sources", type=int, metavar="N", dest="min_k",
                   help="give each question a seeded number of sources between N and -k (default: always -k)")
    q.add_argument("--json", action="store_true", help="print the counts as JSON")
    q.set_defaults(func=cmd_grounded_sft)


def cmd_grounded_sft(args: argparse.Namespace) -> int:
    from finetune.grounded_data import build

    counts = build(args.squad, args.out, exclude=args.exclude, limit=args.limit, seed=args.seed,
                   gold_removed_share=args.gold_removed_share,
                   perturbed_share=args.perturbed_share, k=args.k, min_k=args.min_k,
                   report=quiet if args.json else say)
    result = {"out": str(args.out)} | counts.to_dict()
    emit(result, args.json)
    return 0
