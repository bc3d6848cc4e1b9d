"""hearth bench decode | tui | grounding | retrieval | serve | sync: two implementations compared in one run."""

from __future__ import annotations

import argparse
from pathlib import Path

from assistant.cli.output import emit, quiet, say
from assistant.errors import HearthError


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks that compare two implementations in one run")
    bs = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    q = bs.add_parser("decode", help="scratch engine vs transformers generate on the default model")
    q.add_argument("--tokens", type=int, default=256, help="new tokens per measurement (default %(default)s)")
    q.add_argument("--device", choices=("cpu", "cuda"), help="where both engines run (default: cuda if there is one)")
    q.add_argument("--squad", type=Path, metavar="FILE",
                   help="SQuAD JSON whose paragraphs make grounded prompts: grounded answers as the chat gives "
                        "them (the grounded-answer adapter on focused evidence, up to 128 tokens) and the bundled "
                        "model itself (whole paragraphs, 128 tokens), each decoded with and without prompt-lookup "
                        "speculation (skipped without it)")
    q.add_argument("--gguf", metavar="FILE|NAME",
                   help="instead: a GGUF file (or an installed voice, e.g. qwen2.5-coder-0.5b) on its own blocks "
                        "against llama.cpp on the same file, at 1 and 2 threads: prefill and decode tok/s, peak "
                        "RSS of each, and next-token agreement with the dequantised fp32 model")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_decode)

    q = bs.add_parser("tui", help="first frame time and per-token rendering cost of the chat UI")
    q.add_argument("--tokens", type=int, default=2000, help="tokens in the streamed reply (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_tui)

    q = bs.add_parser("grounding", help="seconds the hallucination check adds to a typical grounded answer")
    q.add_argument("--sentences", type=int, default=5, help="answer sentences (default %(default)s)")
    q.add_argument("--sources", type=int, default=5, help="sources of ~300 tokens (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_grounding)

    q = bs.add_parser("retrieval", help="hybrid query latency on a large synthetic collection")
    q.add_argument("--chunks", type=int, default=100_000, help="collection size (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_retrieval)

    q = bs.add_parser("serve", help="`hearth serve` under concurrent streaming clients: throughput and time to "
                      "first token per concurrency level, and the batching speedup")
    q.add_argument("--concurrency", default="1,4,8", help="comma-separated client counts (default %(default)s)")
    q.add_argument("--requests", type=int, default=16, help="requests per level (default %(default)s)")
    q.add_argument("--max-tokens", type=int, default=64, help="tokens per reply at most (default %(default)s)")
    q.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="scratch engine weights (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_serve)

    q = bs.add_parser("sync", help="a collection's sync (no change, one edit, one rename) against a full ingest")
    q.add_argument("--files", type=int, default=2000, help="files in the collection (default %(default)s)")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=cmd_sync)


def _report(args: argparse.Namespace):
    return quiet if args.json else say


def cmd_decode(args: argparse.Namespace) -> int:
    if args.gguf:
        from assistant.bench import gguf_decode
        from backends.registry import resolve_source

        path = resolve_source(args.gguf)
        if not path.is_file():
            raise HearthError(f"--gguf needs a .gguf file or an installed voice; {args.gguf} is a folder")
        emit(gguf_decode.run(path, new_tokens=min(args.tokens, 128), report=_report(args)), args.json)
        return 0
    from assistant.bench import decode

    emit(decode.run(new_tokens=args.tokens, report=_report(args), device=args.device, squad=args.squad), args.json)
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from assistant.bench import tui

    emit(tui.run(n_tokens=args.tokens, report=_report(args)), args.json)
    return 0


def cmd_grounding(args: argparse.Namespace) -> int:
    from assistant.bench.grounding import bench

    emit(bench(sentences=args.sentences, sources=args.sources), args.json)
    return 0


def cmd_retrieval(args: argparse.Namespace) -> int:
    from assistant.bench.retrieval import bench_latency

    emit(bench_latency(n_chunks=args.chunks, report=_report(args)), args.json)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from assistant.bench import sync

    if args.files < 10:
        raise HearthError("--files must be at least 10")
    emit(sync.run(n_files=args.files, report=_report(args)), args.json)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from assistant.bench import serve

    try:
        levels = sorted({int(x) for x in args.concurrency.split(",")})
    except ValueError:
        raise HearthError("--concurrency takes comma-separated numbers, e.g. 1,4,8") from None
    if not levels or levels[0] < 1 or args.requests < 1 or args.max_tokens < 1:
        raise HearthError("--concurrency levels, --requests and --max-tokens must be at least 1")
    emit(serve.run(levels, args.requests, args.max_tokens, args.precision, report=_report(args)), args.json)
    return 0
