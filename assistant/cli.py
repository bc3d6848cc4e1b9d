"""The `hearth` command: ask, chat, history, setup."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path

from assistant import offline as _offline  # noqa: F401
from assistant.config import (DEFAULT_BACKEND, DEFAULT_MAX_NEW_TOKENS, DEFAULT_SYSTEM_PROMPT, GROUNDING_GENERAL,
                              GROUNDING_KINDS, GROUNDING_QUESTION)
from assistant.errors import HearthError

log = logging.getLogger("hearth")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- shared options ---------------------------------------------------------------------------
def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--backend", default=DEFAULT_BACKEND, choices=("hf", "scratch"),
                   help="hf: transformers; scratch: our own decoder and KV cache (default: %(default)s)")
    g.add_argument("--model", metavar="PATH", help="model folder (default: the bundled SmolLM2-135M-Instruct)")
    g.add_argument("--adapter", metavar="PATH", help="LoRA adapter folder to apply (hf backend)")
    g.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="scratch backend weights: fp32 (reference), bf16, int8 (fastest on CPU)")


SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "repetition_penalty")  # SamplingParams fields set from flags


def add_sampling_options(g) -> None:
    from backends.sampling import SamplingParams

    d = SamplingParams()
    g.add_argument("--temperature", type=float, default=None, help=f"0 = greedy (default {d.temperature})")
    g.add_argument("--top-k", type=int, default=None, help=f"keep the k most likely tokens (default {d.top_k}, 0 = off)")
    g.add_argument("--top-p", type=float, default=None, help=f"nucleus sampling mass (default {d.top_p} = off)")
    g.add_argument("--repetition-penalty", type=float, default=None,
                   help="make tokens already in the reply less likely: their logits are divided by this when "
                        f"positive, multiplied when negative (default {d.repetition_penalty}, 1 = off)")
    g.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    g.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="most tokens in a reply (default %(default)s)")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--system", help="system prompt for a new conversation")
    add_sampling_options(g)


def add_docs_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("documents")
    g.add_argument("--docs", metavar="COLLECTION", help="answer from this document collection, with citations")
    g.add_argument("-k", "--sources", type=int, default=3, dest="k", help="sources per answer (default %(default)s)")
    g.add_argument("--on-unsupported", choices=("annotate", "regenerate", "abstain"), default="annotate",
                   help="when a grounded answer's support score is below the threshold: mark its unsupported "
                        "sentences (annotate, default), retry once with a stricter instruction and keep the better "
                        "answer (regenerate), or answer \"I don't know based on the documents.\" (abstain)")
    g.add_argument("--check", action="store_true",
                   help="also check answers given without --docs, against what you said in the conversation")
    g.add_argument("--self-check", type=int, default=0, metavar="N",
                   help="self-consistency: compare each checked answer with N re-sampled ones (costs N generations)")


def sampling_from_args(args: argparse.Namespace):
    """SamplingParams from the command line; invalid values (and --max-tokens) become a HearthError."""
    from backends.sampling import SamplingParams

    if args.max_tokens < 1:
        raise HearthError("--max-tokens must be at least 1")
    given = {name: getattr(args, name) for name in SAMPLING_OPTIONS}
    try:
        return SamplingParams(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise HearthError(str(exc)) from exc


def open_session(args: argparse.Namespace, store):
    """A ChatSession for the CLI options: a new conversation or --conversation ID."""
    from assistant.conversation import ChatSession
    from backends.registry import load_backend

    sampling = sampling_from_args(args)
    if store is not None and args.conversation is not None:
        store.get_conversation(args.conversation)  # fail fast, before loading a model
    options = dict(sampling=sampling, max_new_tokens=args.max_tokens, on_unsupported=args.on_unsupported,
                   check_answers=args.check, self_check=args.self_check)
    if getattr(args, "docs", None):  # an unknown collection fails fast, before loading a model
        from retrieval.collection import Collection

        options.update(collection=Collection(args.docs, create=False), k=args.k)
    backend = load_backend(args.backend, args.model, args.adapter, report=_stderr, precision=args.precision)
    if args.conversation is not None:
        if store is None:
            raise HearthError("--conversation needs history; drop --no-history")
        session = ChatSession.resume(backend, store, args.conversation, **options)
        if args.system:
            session.system_prompt = args.system
        return session
    return ChatSession(backend=backend, store=store, system_prompt=args.system or DEFAULT_SYSTEM_PROMPT, **options)


# -- commands ---------------------------------------------------------------------------------
def cmd_setup(args: argparse.Namespace) -> int:
    from backends.hf.default_model import ensure_default_model

    path = ensure_default_model(report=_stderr)
    _stderr(f"Default model: {path}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from assistant.conversation import DoneEvent, TokenEvent
    from assistant.store import Store

    question = sys.stdin.read() if args.question == "-" else args.question
    if not question.strip():
        raise HearthError("the question is empty")
    store = None if args.no_history else Store()
    session = open_session(args, store)
    cancel = threading.Event()
    done = None
    events = session.send(question, cancel)
    checked = session.collection is not None or session.check_answers
    stream = not args.json and not checked  # checked answers print once checked
    try:
        for event in events:
            if isinstance(event, TokenEvent) and stream:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, DoneEvent):
                done = event
    except KeyboardInterrupt:
        events.close()  # stores the partial reply, marked cancelled
        if not args.json:
            sys.stdout.write("\n[stopped]\n")
        return 130
    assert done is not None
    if not args.json and checked:
        print_grounded(done.message)
    if args.json:
        print(json.dumps({
            "answer": done.message.content,
            "backend": session.backend.name,
            "model": session.backend.model_id,
            "conversation_id": session.conversation_id,
            "finish_reason": done.finish_reason,
            "sources": done.message.sources,
            "checks": done.message.checks,
            "timings": {
                "ttft_s": done.timings.ttft_s,
                "decode_tok_s": done.timings.decode_tok_s,
                "prompt_tokens": done.timings.prompt_tokens,
                "completion_tokens": done.timings.completion_tokens,
            },
        }, ensure_ascii=False))
    elif stream:
        sys.stdout.write("\n")
    if not args.json and done.finish_reason == "length":
        _stderr("[reply cut at --max-tokens]")
    if done.error:
        _stderr(f"hearth: generation failed: {done.error}")
        return 1
    return 0


def print_grounded(message) -> None:
    """A grounded answer: unsupported sentences marked, then the numbered sources."""
    text = message.content
    if message.checks:
        for sentence in reversed(message.checks["sentences"]):
            if sentence["verdict"] == "unsupported":
                a, b = sentence["start"], sentence["end"]
                text = text[:a] + "\u26a0 " + text[a:b] + " [unsupported]" + text[b:]
    print(text)
    if message.checks and message.checks.get("score") is not None:
        from assistant.conversation import check_kind
        from assistant.grounding.check import shipped_calibration

        score = message.checks["score"]
        threshold = shipped_calibration(check_kind(bool(message.sources))).answer_threshold
        low = f", below the {threshold:.2f} threshold: the sources may not back this answer" if score < threshold else ""
        print(f"\n(support score {score:.2f}{low})")
    if message.sources:
        print("\nSources:")
        for s in message.sources:
            where = f"page {s['page']}" if s.get("page") else f"line {s['line']}"
            heading = f" \u2014 {s['heading']}" if s.get("heading") else ""
            print(f"  [{s['rank']}] {s['path']} ({where}){heading}")


def chat_settings(args: argparse.Namespace) -> dict:
    """The chat UI's settings from the command line; sampling options given replace the preset."""
    sampling = sampling_from_args(args)  # validates them (and --max-tokens) before the UI starts
    given = any(getattr(args, name) is not None for name in (*SAMPLING_OPTIONS, "seed"))
    return {"max_new_tokens": args.max_tokens, "on_unsupported": args.on_unsupported, "check": args.check,
            **({"sampling": sampling.to_dict()} if given else {})}


def cmd_chat(args: argparse.Namespace) -> int:
    from assistant.store import Store

    store = Store()
    if args.plain:
        from assistant.repl import run_repl

        return run_repl(open_session(args, store))
    if args.conversation is not None:
        store.get_conversation(args.conversation)
    from tui.app import HearthApp

    app = HearthApp(store=store, backend=args.backend, model=args.model, adapter=args.adapter, docs=args.docs,
                    conversation_id=args.conversation)
    app.settings.update(chat_settings(args))
    if args.system:
        app.system_prompt = args.system
    app.run()
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from assistant.export import export
    from assistant.store import Store

    store = Store()
    if args.action == "list":
        convs = store.list_conversations(query=args.search, limit=args.limit)
        if args.json:
            print(json.dumps([c.to_dict() for c in convs], ensure_ascii=False))
        for c in [] if args.json else convs:
            print(f"{c.id:>5}  {c.updated_at[:19].replace('T', ' ')}  {c.title}")
        return 0
    conv = store.get_conversation(args.id)
    if args.action == "show":
        messages = store.messages(conv.id)
        if args.json:
            print(json.dumps({"conversation": conv.to_dict(), "messages": [m.to_dict() for m in messages]}, ensure_ascii=False))
        else:
            print(export(conv, messages, "md"))
    elif args.action == "export":
        text = export(conv, store.messages(conv.id), args.format)
        if args.output:
            from assistant.files import write_atomic

            write_atomic(Path(args.output), text + "\n")
            _stderr(f"wrote {args.output}")
        else:
            print(text)
    elif args.action == "delete":
        store.delete_conversation(conv.id)
        _stderr(f"deleted conversation {conv.id}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from retrieval.collection import Collection, list_collections
    from retrieval.embedder import Embedder

    paths = [Path(p) for p in args.paths]
    missing = [p for p in paths if not p.exists()]
    if missing and len(missing) == len(paths) and args.collection not in list_collections():
        raise HearthError(f"{missing[0]} does not exist")  # a typo; a gone path of a collection removes its documents
    collection = Collection(args.collection, embedder=Embedder(args.embedder) if args.embedder else None)
    bar = tqdm(total=None, unit="file", desc=f"ingest {args.collection}", file=sys.stderr, disable=args.json)

    def progress(state: dict) -> None:
        bar.total = state["files_total"]
        bar.n = state["files_done"]
        elapsed = bar.format_dict["elapsed"] or 1e-9
        bar.set_postfix(chunks=state["chunks"], chunks_s=f"{state['chunks'] / elapsed:.1f}", refresh=False)
        bar.refresh()

    try:
        report = collection.ingest(paths, max_bytes=args.max_mb * 1024 * 1024, progress=progress)
    finally:
        bar.close()
    for path, reason in report.skipped:
        _stderr(f"skipped {path}: {reason}")
    summary = {"collection": args.collection, "added": report.added, "updated": report.updated,
               "unchanged": report.unchanged, "removed": report.removed, "skipped": len(report.skipped),
               "chunks": report.chunks, "seconds": round(report.seconds, 2),
               "chunks_per_s": round(report.chunks_per_s, 2)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.collection}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
              f"{report.removed} removed, {len(report.skipped)} skipped; {report.chunks} chunks in "
              f"{report.seconds:.1f} s ({report.chunks_per_s:.1f} chunks/s)")
    return 1 if len(missing) == len(paths) and not report.removed else 0  # every path a typo


def cmd_search(args: argparse.Namespace) -> int:
    from retrieval.collection import Collection
    from retrieval.search import search

    collection = Collection(args.collection, create=False)
    hits = search(collection, args.query, k=args.k, mode=args.mode)
    if args.json:
        print(json.dumps([h.to_dict(rank) for rank, h in enumerate(hits, 1)], ensure_ascii=False))
        return 0
    if not hits:
        print("no matches")
    for rank, hit in enumerate(hits, 1):
        c = hit.chunk
        where = f"{c.path}:{c.line_start}" + (f" (page {c.page})" if c.page else "")
        snippet = " ".join(c.text.split())[:200]
        print(f"{rank}. [{hit.score:.3f}] {where}" + (f"  \u2014 {c.heading}" if c.heading else ""))
        print(f"   {snippet}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from retrieval.collection import Collection

    collection = Collection(args.collection, create=False)
    if args.action == "rebuild":
        collection.rebuild_index()
    elif args.action == "remove":
        removed = collection.remove_path(Path(args.path))
        _stderr(f"removed {removed} document(s) from {args.collection}")
    status = collection.status()
    if args.json:
        print(json.dumps(status))
    else:
        for key, value in status.items():
            print(f"{key}: {value}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from assistant.grounding import check
    from retrieval.embedder import shared_embedder
    from retrieval.loaders import SkipFile, load

    answer = sys.stdin.read() if args.answer == "-" else args.answer
    if not answer.strip():
        raise HearthError("the answer is empty")
    sources = []
    for n, name in enumerate(args.sources, 1):
        try:
            sources.append((n, load(Path(name)).text))
        except SkipFile as exc:
            raise HearthError(f"{name}: {exc}") from exc
        except FileNotFoundError as exc:
            raise HearthError(f"{name}: no such file") from exc
    kind = args.kind or (GROUNDING_QUESTION if args.question else GROUNDING_GENERAL)
    checks = check(answer, sources, shared_embedder(), question=args.question or "", kind=kind)
    if args.json:
        print(json.dumps(checks.to_dict(), ensure_ascii=False))
        return 0
    for s in checks.sentences:
        mark = {"supported": "ok ", "unsupported": "\u26a0  ", "unverifiable": "-  "}[s.verdict]
        cited = f"  (best: {', '.join(args.sources[i - 1] for i in s.evidence)})" if s.evidence else ""
        print(f"{mark}{s.score:.2f}  {s.text.strip()}{cited}")
    if checks.score is not None:
        verdict = "supported" if checks.supported else "NOT supported"
        print(f"\nanswer support {checks.score:.2f} ({verdict}; threshold {checks.threshold:.2f})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    overrides = {"max_steps": args.max_steps, "time_budget_min": args.time_budget, "lr": getattr(args, "lr", None),
                 "batch_size": getattr(args, "batch_size", None), "grad_accum": getattr(args, "grad_accum", None),
                 "eval_every": getattr(args, "eval_every", None), "seed": getattr(args, "seed", None),
                 "compile": True if getattr(args, "compile", False) else None} if hasattr(args, "max_steps") else {}
    if args.what == "tokenizer":
        from finetune.data import read_documents
        from finetune.tokenizer import train_bpe

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tok = train_bpe(read_documents([Path(f) for f in args.files]) if len(args.files) == 1 else
                        [Path(f).read_text(encoding="utf-8", errors="replace") for f in args.files], args.vocab_size)
        tok.save(str(out / "tokenizer.json"))
        result = {"out": str(out), "vocab_size": tok.get_vocab_size()}
    elif args.what == "pretrain":
        from finetune.pretrain import pretrain

        result = pretrain([Path(f) for f in args.data], Path(args.out or args.resume), preset=args.preset,
                          tokenizer_path=Path(args.tokenizer) if args.tokenizer else None, vocab_size=args.vocab_size,
                          context=args.context, overrides=overrides,
                          resume=Path(args.resume) if args.resume else None, quiet=args.json)
    elif args.what == "sft":
        from finetune.sft import sft

        result = sft(Path(args.data), Path(args.out or args.resume), base=Path(args.base) if args.base else None,
                     lora=args.lora, r=args.r, alpha=args.alpha, dropout=args.dropout,
                     targets=args.target_modules.split(",") if args.target_modules else None, epochs=args.epochs,
                     patience=args.patience, max_len=args.max_len, system=args.system, limit=args.limit,
                     val_data=Path(args.val_data) if args.val_data else None, overrides=overrides,
                     resume=Path(args.resume) if args.resume else None, quiet=args.json)
    elif args.what == "grounding":
        from assistant.bench.grounding import fit_shipped

        calibrations = fit_shipped(Path(args.ragtruth), Path(args.wice) if args.wice else None, Path(args.out),
                                   report=_stderr)
        result = {"out": args.out, "fitted_on": calibrations[GROUNDING_GENERAL].fitted_on,
                  "answer_threshold": {k: c.answer_threshold for k, c in calibrations.items()},
                  "sentence_threshold": {k: c.sentence_threshold for k, c in calibrations.items()}}
    elif args.what == "merge":
        from finetune.sft import merge

        result = merge(Path(args.adapter), Path(args.out), base=Path(args.base) if args.base else None)
        _stderr(f"merged vs adapter: max |logit difference| = {result['max_abs_logit_diff']:.2e}")
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    report = (lambda text: None) if args.json else _stderr
    if args.what == "perplexity":
        from finetune.evaluate import perplexity

        result = perplexity(Path(args.model), [Path(f) for f in args.data])
    elif args.what == "retrieval":
        from assistant.bench.retrieval import eval_squad

        if not Path(args.squad).is_file():
            raise HearthError(f"no SQuAD file at {args.squad}")
        result = eval_squad(Path(args.squad), limit=args.limit, report=report)
    elif args.what == "answers":
        from assistant.bench.answers import eval_answers
        from backends.registry import load_backend

        if not Path(args.squad).is_file():
            raise HearthError(f"no SQuAD file at {args.squad}")
        if args.limit < 1:
            raise HearthError("--limit must be at least 1")
        if args.seed is None:
            args.seed = 0  # an evaluation is reproducible unless told otherwise
        sampling = sampling_from_args(args)
        backend = load_backend(args.backend, args.model, args.adapter, report=_stderr, precision=args.precision)
        result = eval_answers(Path(args.squad), backend, sampling, limit=args.limit, seed=args.sample_seed, k=args.k,
                              max_new_tokens=args.max_tokens, report=report)
    elif args.what == "grounding":
        from assistant.bench.grounding import evaluate

        if not Path(args.data).exists():
            raise HearthError(f"no data at {args.data}")
        result = evaluate(Path(args.data), args.format, report=report, shipped=args.shipped)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    report = (lambda text: None) if args.json else _stderr
    if args.what == "decode":
        from assistant.bench import decode

        result = decode.run(new_tokens=args.tokens, report=report, device=args.device)
    elif args.what == "tui":
        from assistant.bench import tui

        result = tui.run(n_tokens=args.tokens, report=report)
    elif args.what == "retrieval":
        from assistant.bench.retrieval import bench_latency

        result = bench_latency(n_chunks=args.chunks, report=report)
    elif args.what == "grounding":
        from assistant.bench.grounding import bench

        result = bench(sentences=args.sentences, sources=args.sources)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hearth",
        description="Hearth: a private, offline chat assistant for the terminal. "
        "With no command, opens the chat.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("ask", help="ask one question and stream the answer")
    p.add_argument("question", help="the question, or - to read it from stdin")
    add_model_options(p)
    add_generation_options(p)
    p.add_argument("--conversation", type=int, metavar="ID", help="continue a stored conversation")
    add_docs_options(p)
    p.add_argument("--no-history", action="store_true", help="do not store this exchange")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="open the chat (full-screen terminal UI; --plain for a simple line REPL)")
    p.add_argument("--plain", action="store_true", help="a plain streaming REPL instead of the full-screen UI")
    add_model_options(p)
    add_generation_options(p)
    p.add_argument("--conversation", type=int, metavar="ID", help="continue a stored conversation")
    add_docs_options(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("history", help="list, show, export or delete stored conversations")
    hs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = hs.add_parser("list", help="conversations, newest first")
    q.add_argument("--search", metavar="TEXT", help="only conversations whose title or messages contain TEXT")
    q.add_argument("--limit", type=int, help="at most this many")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = hs.add_parser("show", help="print one conversation")
    q.add_argument("id", type=int)
    q.add_argument("--json", action="store_true", help="print JSON")
    q = hs.add_parser("export", help="export one conversation")
    q.add_argument("id", type=int)
    q.add_argument("--format", choices=("md", "json", "chatml"), default="md",
                   help="md (readable), json (every field), chatml (one JSONL training line)")
    q.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    q = hs.add_parser("delete", help="delete one conversation")
    q.add_argument("id", type=int)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("ingest", help="add files and folders to a document collection")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (walked recursively)")
    p.add_argument("--collection", default="default", help="collection name (default: %(default)s)")
    p.add_argument("--embedder", metavar="PATH", help="sentence-transformers folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--max-mb", type=int, default=20, help="skip files larger than this (default %(default)s MiB)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search a document collection")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="number of results (default %(default)s)")
    p.add_argument("--mode", choices=("hybrid", "dense", "keyword"), default="hybrid",
                   help="hybrid (default): dense + keyword fused; dense: embeddings; keyword: BM25")
    p.add_argument("--collection", default="default", help="collection name (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("index", help="status, rebuild or remove documents of a collection")
    ix = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("status", "counts and consistency"), ("rebuild", "rebuild the FAISS index from SQLite"),
                       ("remove", "remove a file or folder's documents")):
        q = ix.add_parser(name, help=text)
        if name == "remove":
            q.add_argument("path")
        q.add_argument("--collection", default="default", help="collection name (default: %(default)s)")
        q.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("train", help="train a tokenizer, pretrain, finetune (SFT/LoRA), merge adapters")
    ts = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = ts.add_parser("tokenizer", help="byte-level BPE with the ChatML special tokens")
    q.add_argument("files", nargs="+", metavar="FILE")
    q.add_argument("--vocab-size", type=int, required=True)
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--json", action="store_true", help="print one JSON line")

    def caps(q):
        q.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
        q.add_argument("--time-budget", type=float, metavar="MINUTES", help="stop after this long (then evaluate and save)")
        q.add_argument("--lr", type=float, help="peak learning rate")
        q.add_argument("--batch-size", type=int, help="sequences per micro-batch")
        q.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
        q.add_argument("--eval-every", type=int, help="evaluate (and checkpoint) every N steps")
        q.add_argument("--seed", type=int, help="seed for initialisation and batch order")
        q.add_argument("--compile", action="store_true", help="torch.compile the model")
        q.add_argument("--resume", metavar="DIR", help="continue exactly from a checkpoint folder")
        q.add_argument("--json", action="store_true", help="end with one JSON summary line")

    q = ts.add_parser("pretrain", help="train the scratch decoder on plain text")
    q.add_argument("--data", nargs="+", required=True, metavar="FILE", help="text files (one file: blank-line blocks are documents)")
    q.add_argument("--preset", default="book", choices=("book", "small", "shakespeare"), help="model and training preset")
    q.add_argument("--out", metavar="DIR", help="checkpoint folder")
    q.add_argument("--tokenizer", metavar="DIR", help="tokenizer.json to use (default: train one on the data)")
    q.add_argument("--vocab-size", type=int, default=2048, help="vocabulary when training a tokenizer (default %(default)s)")
    q.add_argument("--context", type=int, help="override the preset's context length")
    caps(q)
    q = ts.add_parser("sft", help="supervised finetuning, full or LoRA")
    q.add_argument("--data", required=True, metavar="FILE", help="JSONL/JSON: {messages}, {instruction, solution} or Alpaca")
    q.add_argument("--base", metavar="MODEL", help="HF folder or scratch checkpoint (default: the bundled SmolLM2)")
    q.add_argument("--out", metavar="DIR", help="adapter or model folder")
    q.add_argument("--lora", action="store_true", help="train a LoRA adapter (peft) instead of all weights")
    q.add_argument("--r", type=int, default=16, help="LoRA rank (default %(default)s)")
    q.add_argument("--alpha", type=int, default=32, help="LoRA alpha (default %(default)s)")
    q.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (default %(default)s)")
    q.add_argument("--target-modules", help="comma-separated (default q/k/v/o_proj for HF, W_Q/W_K/W_V/W_O for scratch)")
    q.add_argument("--epochs", type=float, default=3.0, help="passes over the data (default %(default)s)")
    q.add_argument("--patience", type=int, default=2, help="early stop after N evaluations without improvement")
    q.add_argument("--max-len", type=int, default=512, help="tokens per example (default %(default)s)")
    q.add_argument("--val-data", metavar="FILE", help="validation file (default: hold out 10%%)")
    q.add_argument("--system", help="system prompt added to examples without one")
    q.add_argument("--limit", type=int, help="use only the first N examples")
    caps(q)
    q = ts.add_parser("grounding", help="fit the hallucination check's calibration on human labels")
    q.add_argument("--ragtruth", required=True, metavar="FILE", help="RAGTruth JSONL with source_info and labels")
    q.add_argument("--wice", metavar="DIR", help="WiCE folder: its claim_dev.jsonl is added to the fit")
    q.add_argument("--out", default=str(Path(__file__).parent / "grounding" / "weights.json"),
                   help="where to write the weights (default: the shipped assistant/grounding/weights.json)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q = ts.add_parser("merge", help="merge a LoRA adapter into its base weights")
    q.add_argument("--adapter", required=True, metavar="DIR")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--base", metavar="MODEL", help="base model (default: the one the adapter was trained on)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="quality evaluations on labelled data")
    es = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = es.add_parser("perplexity", help="token-weighted perplexity of a model over text files")
    q.add_argument("--model", required=True, metavar="DIR")
    q.add_argument("--data", nargs="+", required=True, metavar="FILE")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q = es.add_parser("grounding", help="AUROC / precision / recall / F1 of the hallucination check on human labels")
    q.add_argument("--data", required=True, metavar="FILE",
                   help="RAGTruth JSONL, or WiCE's claim_test.jsonl (or its folder; claim_dev.jsonl fits the calibration)")
    q.add_argument("--format", required=True, choices=("ragtruth", "wice"))
    q.add_argument("--shipped", action="store_true",
                   help="score with the shipped calibration instead of refitting (refused for data it was fitted on)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q = es.add_parser("answers", help="grounded answers end to end on SQuAD: gold answer found, refusals, loops, support")
    q.add_argument("--squad", required=True, metavar="FILE", help="SQuAD 1.1 or 2.0 JSON file (2.0 adds unanswerable questions)")
    q.add_argument("--limit", type=int, default=100, help="questions to ask, a seeded sample (default %(default)s)")
    q.add_argument("--sample-seed", type=int, default=0, help="which questions (default %(default)s)")
    q.add_argument("-k", "--sources", type=int, default=3, dest="k", help="sources per answer (default %(default)s)")
    add_model_options(q)
    add_sampling_options(q.add_argument_group("generation"))
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q = es.add_parser("retrieval", help="Recall@k / MRR of dense, keyword and hybrid search on SQuAD")
    q.add_argument("--squad", required=True, metavar="FILE", help="SQuAD-format JSON file")
    q.add_argument("--limit", type=int, help="ask only this many questions (a seeded sample)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="benchmarks that compare two implementations in one run")
    bs = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = bs.add_parser("decode", help="scratch engine vs transformers generate on the default model")
    q.add_argument("--tokens", type=int, default=256, help="new tokens per measurement (default %(default)s)")
    q.add_argument("--device", choices=("cpu", "cuda"), help="where both engines run (default: cuda if there is one)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q = bs.add_parser("tui", help="first frame time and per-token rendering cost of the chat UI")
    q.add_argument("--tokens", type=int, default=2000, help="tokens in the streamed reply (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q = bs.add_parser("grounding", help="seconds the hallucination check adds to a typical grounded answer")
    q.add_argument("--sentences", type=int, default=5, help="answer sentences (default %(default)s)")
    q.add_argument("--sources", type=int, default=5, help="sources of ~300 tokens (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q = bs.add_parser("retrieval", help="hybrid query latency on a large synthetic collection")
    q.add_argument("--chunks", type=int, default=100_000, help="collection size (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check", help="check an answer sentence by sentence against source files")
    p.add_argument("--sources", nargs="+", required=True, metavar="FILE", help="the source files (any type ingest reads)")
    p.add_argument("--answer", required=True, metavar="TEXT", help="the answer text, or - to read it from stdin")
    p.add_argument("--question", help="the question the answer replies to (sharpens the model signal)")
    p.add_argument("--kind", choices=GROUNDING_KINDS, default=None,
                   help="what the answer was asked to do, which picks the calibration: question (answer a question "
                        "from the sources; the default with --question), summary, data (describe JSON records), "
                        "general (anything else; the default without --question)")
    p.add_argument("--json", action="store_true",
                   help='print {"score", "sentences": [{"text", "start", "end", "score", "verdict", "evidence"}]}; '
                        "evidence holds 1-based positions in --sources")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("setup", help="prepare the bundled default model (one time)")
    p.set_defaults(func=cmd_setup)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv or ["chat"])
    if args.command is None:
        args = parser.parse_args(["chat", *argv])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except HearthError as exc:
        _stderr(f"hearth: error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
