"""The HTTP layer of `hearth serve`: FastAPI routes shaped like OpenAI's API over a Service.

Every failure a client can cause is the OpenAI error object with its status, never a traceback;
an unexpected failure is a 500 error object, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from assistant.server import protocol
from assistant.server.metrics import CONTENT_TYPE
from assistant.server.protocol import ApiError
from assistant.server.service import Finished, Service

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
# Streamed replies run here; reused threads keep their open Store and Collection objects (service.py).
REPLY_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="reply")
OPEN_PATHS = {"/health"}  # answered without the API key


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def read_json(request: Request):
    """The body as JSON; 413 over MAX_BODY_BYTES (read no further), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes", code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes", code="request_too_large")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from None


def sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


class Guard:
    """ASGI middleware: the API key on every path but OPEN_PATHS, and a count of each answer."""

    ROUTES = {"/health", "/metrics", "/v1/models", "/v1/embeddings", "/v1/chat/completions"}

    def __init__(self, app, api_key: str | None, metrics):
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        label = path if path in self.ROUTES else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")
        if self.api_key is not None and path not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            token = given[7:] if given[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.api_key.encode()):
                self.metrics.request(label, 401)
                response = error_response(ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)",
                                                   type="authentication_error", code="invalid_api_key"))
                return await response(scope, receive, send)
        status = 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.request(label, status)


def create_app(service: Service, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="Hearth", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = service.metrics
    app.add_middleware(Guard, api_key=api_key, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                       type=kind))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(ApiError(400, str(exc)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("request failed")
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": service.model_name}

    @app.get("/metrics")
    async def metrics_text():
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        context = service.backend.context_length
        return {"object": "list", "data": [protocol.model_entry(m, service.created, context)
                                           for m in service.model_ids()]
                + [protocol.model_entry(service.embedder_name(), service.created)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if service.serves_embedder(model_id):
            return protocol.model_entry(service.embedder_name(), service.created)
        if model_id not in service.model_ids():
            raise service.unknown_model(model_id)
        return protocol.model_entry(model_id, service.created, service.backend.context_length)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        model_id, texts, fmt = protocol.parse_embeddings(await read_json(request))
        if not service.serves_embedder(model_id):
            raise ApiError(404, f"the embedding model {model_id!r} does not exist; this server has "
                                f"{service.embedder_name()}", param="model", code="model_not_found")

        def encode():
            from retrieval.embedder import shared_embedder

            embedder = shared_embedder()
            return embedder.encode(texts), sum(embedder.count_tokens(t) for t in texts)

        vectors, tokens = await anyio.to_thread.run_sync(encode)
        return protocol.embeddings_response(model_id, vectors, fmt, tokens)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        chat = protocol.parse_chat(await read_json(request))
        cancel = threading.Event()
        if not chat.stream:
            def run():
                return list(service.reply(chat, cancel))

            try:
                *_, finished = await anyio.to_thread.run_sync(run)
            finally:
                cancel.set()
            return protocol.completion(chat, finished.content, finished.finish_reason, finished.prompt_tokens,
                                       finished.completion_tokens, finished.extension)
        pieces = Relay(service.reply(chat, cancel), cancel)
        first = await pieces.next()  # errors before the first piece are answered with their status
        return StreamingResponse(stream(chat, first, pieces), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return app


async def stream(chat, first, pieces: "Relay"):
    """SSE chunks: the role, the text as it comes, the last chunk with finish_reason (and the
    `hearth` object of a grounded answer), usage if asked, then [DONE]. A client that goes away
    cancels the reply (its batch slot is freed at the next step)."""
    try:
        yield sse(protocol.chunk(chat, {"role": "assistant", "content": ""}))
        item = first
        while True:
            if isinstance(item, Finished):
                yield sse(protocol.chunk(chat, {}, item.finish_reason, item.extension))
                if chat.include_usage:
                    yield sse(protocol.usage_chunk(chat, item.prompt_tokens, item.completion_tokens))
                break
            if item is None:  # ended without a finish (cancelled)
                break
            yield sse(protocol.chunk(chat, {"content": item}))
            try:
                item = await pieces.next()
            except ApiError as exc:  # a failure after the stream began: the error object as an event
                yield sse(exc.body())
                break
        yield sse("[DONE]")
    finally:
        pieces.cancel.set()


class Relay:
    """Runs a blocking reply iterator in a thread and hands its items to the event loop."""

    def __init__(self, items, cancel: threading.Event):
        self.cancel = cancel
        self._queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def work() -> None:
            try:
                for item in items:
                    loop.call_soon_threadsafe(self._queue.put_nowait, item)
                loop.call_soon_threadsafe(self._queue.put_nowait, None)
            except BaseException as exc:  # noqa: BLE001  (re-raised in the event loop by next())
                loop.call_soon_threadsafe(self._queue.put_nowait, exc)

        REPLY_THREADS.submit(work)

    async def next(self):
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item
