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
    q.add_argument("--data", metavar="FILE",
                   help="RAGTruth JSONL; WiCE's claim_test.jsonl (or its folder; claim_dev.jsonl fits the calibration); "
                        "or SummaC claims such as cogensumm_test_claims.jsonl (claims.jsonl beside it fits the "
                        "calibration and the balanced-accuracy threshold, documents.jsonl holds the sources)")
    q.add_argument("--format", choices=("ragtruth", "wice", "summac"))
    q.add_argument("--feedback", action="store_true",
                   help="instead of --data: score the verdicts you labelled in the chat (/verdict N right|wrong) "
                        "with the shipped calibration and with yours (from `hearth train grounding --feedback`)")
    q.add_argument("--fit-limit", type=int, metavar="N",
                   help="summac: fit on a seeded sample of N validation claims (measuring each takes seconds)")
    q.add_argument("--limit", type=int, metavar="N",
                   help="ragtruth: score a seeded sample of N answers (measuring each takes seconds)")
    q.add_argument("--no-support-signal", action="store_true",
                   help="fit the calibration without the support model's signals (as the shipped one before them)")
    q.add_argument("--shipped", action="store_true",
                   help="score with the shipped calibration instead of refitting (refused for data it was fitted on)")
    q.add_argument("--signal", choices=("check", "support"), default="check",
                   help="check: the calibrated check (default); support: the support model alone, an answer "
                        "scored by its weakest sentence")
    q.add_argument("--support-model", metavar="DIR", help="with --signal support: a model from `hearth train "
                                                          "support` (default: the shipped one)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_grounding)

    q = es.add_parser("answers", help="grounded answers end to end on SQuAD: gold answer found, refusals, loops, support")
    q.add_argument("--squad", required=True, metavar="FILE", help="SQuAD 1.1 or 2.0 JSON file (2.0 adds unanswerable questions)")
    q.add_argument("--limit", type=int, default=100, help="questions to ask, a seeded sample (default %(default)s)")
    q.add_argument("--sample-seed", type=int, default=0, help="which questions (default %(default)s)")
    add_sources_option(q)
    add_model_options(q)
    add_sampling_options(q.add_argument_group("generation"))
    q.add_argument("--compare-adapter", action="store_true",
                   help="answer each question without and with the default model's grounded-answer adapter "
                        "(same retrieval) and print both")
    q.add_argument("--no-grounded-adapter", action="store_false", dest="grounded_adapter", default=None,
                   help="answer with the bundled model itself, not its grounded-answer adapter")
    q.add_argument("--grounded-adapter", type=Path, metavar="DIR", dest="grounded_adapter_dir",
                   help="a grounded-answer adapter of your own (hearth train sft --lora on data grounded-sft "
                        "data) in place of the one that ships; grounded answers read the same focused evidence")
    q.add_argument("--self-check", type=int, metavar="N",
                   help="self-consistency: compare each answer with N re-sampled ones, as ask --self-check does "
                        "(costs N generations per question)")
    q.add_argument("--rows", type=Path, metavar="FILE",
                   help="keep every scored answer in this JSONL file as it is given; a rerun with the same "
                        "file, settings and weights answers only the questions missing from it (a crash loses "
                        "nothing, and --compare-adapter re-answers only the side whose adapter changed)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_answers)

    q = es.add_parser("retrieval", help="Recall@k / MRR of dense, keyword and hybrid search on SQuAD")
    q.add_argument("--squad", required=True, metavar="FILE", help="SQuAD-format JSON file")
    q.add_argument("--limit", type=int, help="ask only this many questions (a seeded sample)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_retrieval)

    q = es.add_parser("collection", help="hit@1 / hit@5 / MRR of your own questions on your own collection",
                      description="QUESTIONS is JSONL (or a JSON list) of {\"question\", \"file\", \"text\"}: "
                      "the file that answers each question (relative to the QUESTIONS file, or absolute) and, "
                      "optionally, a passage of it the hit must contain. Prints hit@1, hit@5, MRR and every "
                      "question whose file was not ranked first.")
    q.add_argument("name", help="the collection")
    q.add_argument("--questions", required=True, metavar="FILE")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_collection)


def cmd_perplexity(args: argparse.Namespace) -> int:
    from finetune.evaluate import perplexity

    emit(perplexity(Path(args.model), [Path(f) for f in args.data]), args.json)
    return 0


def cmd_grounding(args: argparse.Namespace) -> int:
    from assistant.bench.grounding import evaluate

    if args.feedback:
        from assistant.bench.grounding import evaluate_feedback
        from assistant.store import Store

        if args.data or args.format or args.shipped or args.fit_limit is not None or args.signal != "check":
            raise HearthError("--feedback scores your labels by itself: leave out --data, --format, --shipped, "
                              "--fit-limit and --signal")
        result = evaluate_feedback(Store(), report=quiet if args.json else say)
        emit(result if args.json else feedback_report(result), args.json)
        return 0
    if not (args.data and args.format):
        raise HearthError("say what to score: --data FILE --format ragtruth|wice|summac (or --feedback)")
    data = _existing(args.data, "data")
    if args.signal == "support":
        from assistant.bench.support import evaluate_support

        if args.shipped or args.fit_limit is not None:
            raise HearthError("--shipped and --fit-limit apply to the calibrated check, not --signal support")
        folder = _existing(args.support_model, "support model") if args.support_model else None
        emit(evaluate_support(data, args.format, folder, report=quiet if args.json else say), args.json)
        return 0
    if args.support_model:
        raise HearthError("--support-model goes with --signal support")
    if args.fit_limit is not None and (args.format != "summac" or args.fit_limit < 5):
        raise HearthError("--fit-limit applies to --format summac and needs at least 5 claims")
    if args.limit is not None and (args.format != "ragtruth" or args.shipped or args.limit < 10):
        raise HearthError("--limit applies to --format ragtruth (cross-validated) and needs at least 10 answers")
    from assistant.grounding.calibration import signals_to_fit

    emit(evaluate(data, args.format, report=quiet if args.json else say, shipped=args.shipped,
                  fit_limit=args.fit_limit, limit=args.limit,
                  features=signals_to_fit(not args.no_support_signal)), args.json)
    return 0


def feedback_report(result: dict) -> str:
    """`eval grounding --feedback` as text: the labels, then each calibration's figures."""
    lines = [f"{result['replies']} labelled replies: {result['sentences']} sentences ({result['unsupported']} "
             f"unsupported), {result['answers']} answers whose label is known ({result['answers_hallucinated']} "
             "hallucinated)"]
    for name in ("shipped", "yours"):
        if name in result:
            r = result[name]
            lines.append(f"{name}: sentence AUROC {_cell(r['sentence_auroc'])}, answer AUROC {_cell(r['answer_auroc'])}, "
                         f"verdicts agreeing with your labels {_cell(r['agreement'])}  (fitted on {r['fitted_on']})")
    return "\n".join(lines)


def cmd_answers(args: argparse.Namespace) -> int:
    from assistant.bench.answers import eval_answers
    from backends.registry import load_for

    squad = _existing(args.squad, "SQuAD file")
    if args.limit < 1:
        raise HearthError("--limit must be at least 1")
    if args.seed is None:
        args.seed = 0  # an evaluation is reproducible unless told otherwise
    settings = chat_settings(args)
    backend = load_for(settings, say, grounded_adapter=args.grounded_adapter_dir)
    if args.compare_adapter and not getattr(backend, "grounded_adapter", None):
        raise HearthError("--compare-adapter needs the bundled model on the hf backend, which has the adapter")
    result = eval_answers(squad, settings, backend, limit=args.limit, seed=args.sample_seed,
                          report=quiet if args.json else say, compare_adapter=args.compare_adapter,
                          rows_file=args.rows)
    if args.compare_adapter and not args.json:
        print(side_by_side(result))
    else:
        emit(result, args.json)
    return 0


def side_by_side(result: dict) -> str:
    """`eval answers --compare-adapter` as a table: each figure for base and adapter."""
    lines = [f"{'':34} {'base':>8} {'adapter':>8}"]
    for kind in ("answerable", "unanswerable"):
        for key, value in result["base"][kind].items():
            other = result["adapter"][kind][key]
            if value is not None or other is not None:
                lines.append(f"{kind + ' ' + key:34} {_cell(value):>8} {_cell(other):>8}")
    return "\n".join(lines)


def _cell(value) -> str:
    return "-" if value is None else f"{value:g}"


def cmd_retrieval(args: argparse.Namespace) -> int:
    from assistant.bench.retrieval import eval_squad

    squad = _existing(args.squad, "SQuAD file")
    emit(eval_squad(squad, limit=args.limit, report=quiet if args.json else say), args.json)
    return 0


def cmd_collection(args: argparse.Namespace) -> int:
    from assistant.bench.collection import evaluate
    from retrieval.collection import Collection

    questions = _existing(args.questions, "questions file")
    result = evaluate(Collection(args.name, create=False), questions)
    if args.json:
        emit(result, True)
        return 0
    print(f"{result['collection']}: {result['questions']} questions, hit@1 {result['hit@1']:.3f}, "
          f"hit@5 {result['hit@5']:.3f}, MRR {result['mrr']:.3f}")
    for miss in result["missed"]:
        where = f"ranked {miss['rank']}" if miss["rank"] else "not in the top 10"
        print(f"  {where}: {miss['question']}  (wanted {miss['file']}, top {miss['top']})")
    return 0
