"""`hearth serve`: Hearth's models, collections and check behind the OpenAI HTTP API."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
from pathlib import Path

from assistant.cli.options import add_generation_options, add_model_options, chat_settings
from assistant.cli.output import say
from assistant.errors import HearthError

DEFAULT_PORT = 8080


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve the model, collections and check over the OpenAI-compatible HTTP API",
        description="Starts an HTTP server speaking OpenAI's API (GET /v1/models, POST /v1/chat/completions with "
        "streaming, POST /v1/embeddings, GET /health, GET /metrics), so any tool that takes an OpenAI base URL "
        "can use Hearth. Model 'docs:NAME' (or the request field hearth.collection) answers from collection NAME "
        "with citations and the per-sentence check. The scratch backend decodes concurrent requests together "
        "(continuous batching); the hf backend serves them one at a time. Ctrl+C or SIGTERM stops it after "
        "the replies in progress.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs "
                   "--api-key-file)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--api-key-file", type=Path, metavar="FILE",
                   help="require 'Authorization: Bearer KEY' with the key in FILE on every endpoint but /health")
    p.add_argument("--parallel", type=int, default=8, metavar="N",
                   help="sequences decoded together by the scratch backend (default 8)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests that may wait for a slot; more are answered 429 (default 64)")
    p.add_argument("--history", action="store_true", help="store served conversations in the history, marked served")
    add_model_options(p, remote=False)
    add_generation_options(p)
    p.set_defaults(func=cmd_serve)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_key(path: Path | None) -> str | None:
    if path is None:
        return None
    from assistant.files import input_file

    try:
        key = input_file(path, "API key file").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise HearthError(f"cannot read the API key file {path}: {exc}") from None
    if not key or len(key.split()) != 1:
        raise HearthError(f"the API key file {path} must hold one key on one line")
    return key


def cmd_serve(args: argparse.Namespace) -> int:
    if args.parallel < 1 or args.max_queue < 1:
        raise HearthError("--parallel and --max-queue must be at least 1")
    if not 0 <= args.port <= 65535:
        raise HearthError("--port must be from 0 to 65535")
    key = _api_key(args.api_key_file)
    if not _loopback(args.host) and key is None:
        raise HearthError(f"serving on {args.host} would let other machines use this one's model and documents: "
                          "give --api-key-file, or serve on 127.0.0.1")
    settings = chat_settings(args)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        sock.listen(2048)  # connections made once the URL is printed wait for the server, not fail
    except OSError as exc:
        raise HearthError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None

    import uvicorn

    from assistant.server.app import create_app
    from assistant.server.service import Service
    from backends.registry import load_for

    say(f"loading {settings.backend} model {settings.model or '(default)'}…")
    backend = load_for(settings, report=say)
    if settings.backend == "scratch":
        from backends.scratch.batch import BatchedBackend

        served = BatchedBackend(backend, slots=args.parallel, max_queue=args.max_queue)
    else:
        from backends.serial import SerialBackend

        served = SerialBackend(backend, max_queue=args.max_queue)
    service = Service(served, settings, history=args.history, max_queue=args.max_queue)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    say(f"serving {service.model_name} at http://{shown}:{port}/v1 (models: {', '.join(service.model_ids())}); "
        "Ctrl+C stops")
    config = uvicorn.Config(create_app(service, key), log_level="warning", timeout_graceful_shutdown=30,
                            access_log=False)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it found:
    # with this one, a stop asked for by SIGTERM exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        served.close()
    say("stopped")
    return 0
