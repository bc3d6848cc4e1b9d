"""The OpenAI HTTP API's shapes: requests read and checked into Hearth's values, responses and
stream chunks written back, and the error object. No web framework here (app.py serves these).

Sampling fields a request leaves out keep the server's settings (Hearth's "precise" preset unless
`hearth serve` was given others), so a client that sends only `temperature: 0` gets greedy
decoding with the server's repetition penalty; send `frequency_penalty`/`presence_penalty`
explicitly for OpenAI's penalties.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from assistant.chatml import ChatMessage
from assistant.config import POLICIES

MAX_STOP = 4
EXTENSION = "hearth"  # the request body's (and response's) extension object


class ApiError(Exception):
    """An OpenAI error object with its HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass
class ChatRequest:
    """A checked /v1/chat/completions request."""

    model: str
    history: list[ChatMessage]  # the turns before the one answered
    question: str  # the last user message, answered now
    system: str | None  # None: the server's system prompt
    sampling: dict  # SamplingParams fields given
    max_tokens: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    collection: str | None = None
    k: int | None = None
    on_unsupported: str | None = None
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))


def _typed(body: dict, name: str, kinds: tuple, what: str):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise invalid(f"'{name}' must be {what}", param=name, code="invalid_type")
    return value


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = _typed(body, name, (int, float), "a number")
    if value is not None and not low <= value <= high:
        raise invalid(f"'{name}' must be between {low:g} and {high:g}, got {value}", param=name,
                      code="invalid_value")
    return value


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in ("image_url", "input_image", "input_audio", "file"):
                raise invalid(f"messages[{i}]: {kind} content is not supported: Hearth's models read text only",
                              param=f"messages[{i}].content", code="unsupported_content")
            else:
                raise invalid(f"messages[{i}].content parts must be text parts", param=f"messages[{i}].content")
        return "\n".join(texts)
    if content is None and message.get("role") == "assistant":
        return ""
    raise invalid(f"messages[{i}].content must be a string or a list of text parts", param=f"messages[{i}].content",
                  code="invalid_type")


def parse_chat(body) -> ChatRequest:
    """Check a chat completion request; ApiError(400) says what is wrong and where."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = _typed(body, "model", (str,), "a string")
    if not model:
        raise invalid("'model' is required (GET /v1/models lists them)", param="model", code="missing_required_parameter")
    for unsupported in ("tools", "functions", "tool_choice", "function_call", "audio", "prediction"):
        if body.get(unsupported) not in (None, [], "none"):
            raise invalid(f"'{unsupported}' is not supported by Hearth's models", param=unsupported,
                          code="unsupported_parameter")
    n = _typed(body, "n", (int,), "an integer")
    if n not in (None, 1):
        raise invalid("only n = 1 is supported", param="n", code="unsupported_value")
    if body.get("logprobs") not in (None, False):
        raise invalid("'logprobs' is not supported", param="logprobs", code="unsupported_parameter")
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise invalid("only the text response format is supported", param="response_format",
                      code="unsupported_value")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list", param="messages", code="invalid_type")
    system, turns = None, []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise invalid(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if role in ("system", "developer"):
            text = _content(m, i)
            system = text if system is None else f"{system}\n\n{text}"
        elif role in ("user", "assistant"):
            turns.append(ChatMessage(role, _content(m, i)))
        elif role in ("tool", "function"):
            raise invalid(f"messages[{i}]: tool messages are not supported", param=f"messages[{i}].role")
        else:
            raise invalid(f"messages[{i}].role must be system, user or assistant", param=f"messages[{i}].role")
    if not turns or turns[-1].role != "user":
        raise invalid("the last message must be the user's", param="messages")
    sampling = {}
    for name, low, high in (("temperature", 0, 2), ("top_p", 1e-9, 1), ("frequency_penalty", -2, 2),
                            ("presence_penalty", -2, 2)):
        value = _number(body, name, low, high)
        if value is not None:
            sampling[name] = float(value)
    seed = _typed(body, "seed", (int,), "an integer")
    if seed is not None:
        sampling["seed"] = seed % 2**64
    max_tokens = _typed(body, "max_completion_tokens", (int,), "an integer")
    if max_tokens is None:
        max_tokens = _typed(body, "max_tokens", (int,), "an integer")
    if max_tokens is not None and max_tokens < 1:
        raise invalid("'max_tokens' must be at least 1", param="max_tokens", code="invalid_value")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise invalid(f"'stop' must be a string or a list of at most {MAX_STOP} non-empty strings", param="stop")
    stream = bool(_typed(body, "stream", (bool,), "a boolean"))
    options = _typed(body, "stream_options", (dict,), "an object") or {}
    ext = _typed(body, EXTENSION, (dict,), "an object") or {}
    collection = ext.get("collection")
    if collection is not None and not isinstance(collection, str):
        raise invalid("'hearth.collection' must be a collection name", param="hearth.collection")
    k = ext.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 20):
        raise invalid("'hearth.k' must be an integer from 1 to 20", param="hearth.k")
    policy = ext.get("on_unsupported")
    if policy is not None and policy not in POLICIES:
        raise invalid(f"'hearth.on_unsupported' must be one of {', '.join(POLICIES)}", param="hearth.on_unsupported")
    return ChatRequest(model=model, history=turns[:-1], question=turns[-1].content, system=system, sampling=sampling,
                       max_tokens=max_tokens, stop=stop, stream=stream,
                       include_usage=bool(options.get("include_usage")), collection=collection, k=k,
                       on_unsupported=policy)


def parse_embeddings(body) -> tuple[str, list[str], str]:
    """(model, texts, encoding format) of an /v1/embeddings request."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = _typed(body, "model", (str,), "a string")
    if not model:
        raise invalid("'model' is required", param="model", code="missing_required_parameter")
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid("'input' must be a string or a non-empty list of strings (token ids are not accepted)",
                      param="input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid("'encoding_format' must be float or base64", param="encoding_format")
    return model, texts, fmt


def embeddings_response(model: str, vectors: np.ndarray, fmt: str, tokens: int) -> dict:
    def encoded(v: np.ndarray):
        return base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()

    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(request: ChatRequest, content: str, finish_reason: str, prompt_tokens: int, completion_tokens: int,
               extension: dict | None) -> dict:
    body = {"id": request.id, "object": "chat.completion", "created": request.created, "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage(prompt_tokens, completion_tokens)}
    if extension is not None:
        body[EXTENSION] = extension
    return body


def chunk(request: ChatRequest, delta: dict, finish_reason: str | None = None, extension: dict | None = None) -> dict:
    body = {"id": request.id, "object": "chat.completion.chunk", "created": request.created, "model": request.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
    if extension is not None:
        body[EXTENSION] = extension
    return body


def usage_chunk(request: ChatRequest, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": request.id, "object": "chat.completion.chunk", "created": request.created, "model": request.model,
            "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def model_entry(model_id: str, created: int, context_length: int | None = None) -> dict:
    """A /v1/models entry; a chat model's context length as vLLM reports it (max_model_len)."""
    entry = {"id": model_id, "object": "model", "created": created, "owned_by": "hearth"}
    if context_length is not None:
        entry["max_model_len"] = context_length
    return entry
