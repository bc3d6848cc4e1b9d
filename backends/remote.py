"""A model behind an OpenAI-compatible endpoint: Ollama, llama.cpp's server, LM Studio, vLLM, or
another Hearth (`hearth serve`), through the official `openai` package.

Such a model takes messages, not token ids (`takes_messages`): the conversation layer sends the
messages its context budget kept and reads text back. Its tokenizer is not ours to run, so prompt
lengths are estimated conservatively (TokenEstimate). The key is read from the environment variable
the user names, never stored or printed. Every failure is one line naming the URL.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Iterator

from assistant.errors import HearthError
from backends.base import GenerationParams

DEFAULT_CONTEXT = 4096  # when neither --context-length nor the server says
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0  # between two pieces of a stream (a big model's prefill can take a while)
BYTES_PER_TOKEN = 2.5  # fewer than any common tokenizer averages on prose, code or CJK text: lengths run long


class RemoteError(HearthError):
    """A remote endpoint failed; the message names the URL and what went wrong."""


@dataclass(frozen=True)
class TextStep:
    """A piece of reply text from a model that streams text; the last one may carry the finish."""

    text: str
    finish: str | None = None  # "stop" or "length" on the last piece
    completion_tokens: int | None = None  # as the server counted them, when it says
    prompt_tokens: int | None = None


class TokenEstimate:
    """Counts tokens for the context budget without the remote model's tokenizer: one per
    BYTES_PER_TOKEN bytes of UTF-8, rounded up (an over-estimate, so prompts fit). Ids are
    placeholders: they are counted, never sent."""

    im_start_id = 0
    im_end_id = 0
    stop_ids: frozenset[int] = frozenset()

    def encode(self, text: str) -> list[int]:
        return [0] * math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


class OpenAIBackend:
    """Streams chat completions from `base_url` for model `model`."""

    name = "openai"
    precision = "remote"
    adapter = None
    takes_messages = True

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, context_length: int | None = None):
        import openai

        self.base_url = base_url.rstrip("/")
        self.model_id = model
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise HearthError(f"the environment variable {api_key_env} (--api-key-env) is not set")
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key or "not-needed", max_retries=0,
                                    timeout=openai.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        self.tokenizer = TokenEstimate()
        self.context_length = context_length or self._reported_context() or DEFAULT_CONTEXT

    # -- what the server says about the model ------------------------------------------------------
    def models(self) -> list[dict]:
        """The server's /v1/models entries."""
        try:
            return [m.model_dump() for m in self.client.models.list().data]
        except Exception as exc:  # noqa: BLE001  (each openai error becomes one line)
            raise self._failure(exc) from None

    def _reported_context(self) -> int | None:
        """The context length the server reports for the model (vLLM: max_model_len; llama.cpp:
        meta.n_ctx_train; Hearth: max_model_len), or None. An unreachable server is an error now."""
        for entry in self.models():
            if entry.get("id") == self.model_id:
                value = entry.get("max_model_len") or (entry.get("meta") or {}).get("n_ctx_train")
                return int(value) if isinstance(value, int) and value > 0 else None
        return None

    # -- replies -----------------------------------------------------------------------------------
    def stream_text(self, messages, params: GenerationParams, cancel: threading.Event | None = None
                    ) -> Iterator[TextStep]:
        """Stream the reply to `messages`; closing the iterator or setting `cancel` closes the stream."""
        s = params.sampling
        request = {"model": self.model_id, "messages": [{"role": m.role, "content": m.content} for m in messages],
                   "stream": True, "stream_options": {"include_usage": True}, "max_tokens": params.max_new_tokens,
                   "temperature": s.temperature, "top_p": s.top_p}
        if s.frequency_penalty:
            request["frequency_penalty"] = s.frequency_penalty
        if s.presence_penalty:
            request["presence_penalty"] = s.presence_penalty
        if s.seed is not None:
            request["seed"] = s.seed % 2**63
        stream = None
        try:
            stream = self.client.chat.completions.create(**request)
            finish = None
            for chunk in stream:
                if cancel is not None and cancel.is_set():
                    return
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    yield TextStep("", finish, usage.completion_tokens, usage.prompt_tokens)
                for choice in chunk.choices or []:
                    text = (choice.delta.content if choice.delta else None) or ""
                    finish = choice.finish_reason or finish
                    if text or choice.finish_reason:
                        yield TextStep(text, choice.finish_reason)
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001  (each openai error becomes one line)
            raise self._failure(exc, streaming=stream is not None) from None
        finally:
            if stream is not None:
                stream.close()

    def _failure(self, exc: Exception, streaming: bool = False) -> RemoteError:
        """The one-line error for `exc`; `streaming`: the server had answered and was streaming."""
        import openai

        where = self.base_url
        if isinstance(exc, openai.APITimeoutError) or "Timeout" in type(exc).__name__:
            return RemoteError(f"{where}: timed out waiting for the server")
        if streaming and isinstance(exc, (openai.APIConnectionError, OSError)):
            return RemoteError(f"{where}: the reply stream broke ({_reason(exc.__cause__ or exc)})")
        if isinstance(exc, openai.APITimeoutError):
            return RemoteError(f"{where}: timed out waiting for the server")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return RemoteError(f"{where}: cannot connect ({_reason(cause)}); is the server running?")
        if isinstance(exc, openai.AuthenticationError):
            return RemoteError(f"{where}: the server refused the API key (401); set the key's variable and "
                               "pass --api-key-env")
        if isinstance(exc, openai.NotFoundError):
            try:
                names = ", ".join(m["id"] for m in self.models()) or "none"
            except RemoteError:
                names = "(the server did not list them)"
            return RemoteError(f"{where}: no model {self.model_id!r} there (404); it has: {names}")
        if isinstance(exc, openai.RateLimitError):
            return RemoteError(f"{where}: the server is busy or over its rate limit (429); try again shortly")
        if isinstance(exc, openai.APIStatusError):
            return RemoteError(f"{where}: the server failed ({exc.status_code}): {_message(exc)}")
        if isinstance(exc, openai.APIError):
            return RemoteError(f"{where}: the reply stream broke ({_message(exc)})")
        # While a stream is read, the HTTP client's own errors may come through unwrapped.
        if type(exc).__module__.split(".")[0].rstrip("2") in ("httpx", "httpcore"):
            return RemoteError(f"{where}: the reply stream broke ({_reason(exc)})")
        if isinstance(exc, ValueError):
            return RemoteError(f"{where}: the server sent a malformed event ({str(exc)[:120]})")
        return RemoteError(f"{where}: the reply could not be read ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        self.client.close()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if known.lower() in text.lower():
            return known.lower()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:200]
    return str(exc).splitlines()[0][:200]
