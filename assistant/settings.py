"""ChatSettings: everything that decides how a conversation is answered, as one immutable value.

Built once from the command line (`assistant.cli.options.chat_settings`), stored with each
conversation, and replaced (never edited) when the user changes something in the chat. Importing
this module loads no model code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from assistant.config import (DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_POLICY, DEFAULT_SYSTEM_PROMPT,
                              POLICIES)
from assistant.errors import HearthError
from backends.params import PRESETS, SamplingParams
from backends.registry import DEFAULT_BACKEND, DEFAULT_PRECISION, check_choice

# What a stored conversation brings back when it is reopened; the model is whatever runs now.
CONVERSATION_FIELDS = ("collection", "attachments", "k", "sampling", "max_new_tokens", "system_prompt",
                       "on_unsupported", "check", "self_check")


@dataclass(frozen=True)
class ChatSettings:
    """How a conversation is answered: the model, the documents, sampling, and the check."""

    backend: str = DEFAULT_BACKEND
    model: str | None = None  # a model folder, .gguf file or registered name; None is the bundled default
    adapter: str | None = None  # a LoRA adapter folder (hf backend)
    precision: str = DEFAULT_PRECISION
    base_url: str | None = None  # the endpoint of the openai backend
    api_key_env: str | None = None  # the environment variable holding its key (the key is never stored)
    context_length: int | None = None  # the openai backend's context, when the server does not say
    collection: str | None = None  # answer from this document collection, with citations
    attachments: tuple[str, ...] = ()  # or from these files (absolute paths), without a collection
    k: int = DEFAULT_K  # sources per grounded answer
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    on_unsupported: str = DEFAULT_POLICY  # config.POLICIES
    check: bool = False  # also check answers given without documents, against the conversation
    self_check: int = 0  # re-sampled answers for self-consistency (0 = off)
    grounded_adapter: bool = True  # grounded answers of the bundled model use its grounded-answer adapter

    def __post_init__(self) -> None:
        check_choice(self.backend, self.adapter, self.precision, self.base_url, self.model,
                     self.api_key_env is not None or self.context_length is not None)
        if self.context_length is not None and self.context_length < 64:
            raise HearthError("--context-length must be at least 64")
        if self.on_unsupported not in POLICIES:
            raise HearthError(f"unknown policy {self.on_unsupported!r}; choose one of: {', '.join(POLICIES)}.")
        if self.k < 1:
            raise HearthError("the number of sources per answer (-k) must be at least 1")
        if self.max_new_tokens < 1:
            raise HearthError("--max-tokens must be at least 1")
        if self.self_check < 0:
            raise HearthError("--self-check must be 0 or more")
        if self.collection and self.attachments:
            raise HearthError("answer from a collection (--docs) or from attached files (--file), not both")

    @property
    def grounded(self) -> bool:
        """Whether answers come from sources (a collection or attached files), with citations."""
        return self.collection is not None or bool(self.attachments)

    def replace(self, **changes) -> "ChatSettings":
        """A copy with some fields changed (validated like a new one)."""
        return replace(self, **changes)

    @property
    def preset(self) -> str | None:
        """The name of the sampling preset these settings use, if any (the seed aside)."""
        unseeded = replace(self.sampling, seed=None)
        return next((name for name, params in PRESETS.items() if params == unseeded), None)

    def with_backend(self, backend: str) -> "ChatSettings":
        """Switch backend, dropping an adapter or precision the new one does not take."""
        precision = self.precision if backend == "scratch" else DEFAULT_PRECISION
        if backend == "openai":
            return self.replace(backend=backend, adapter=None, precision=precision)
        return self.replace(backend=backend, adapter=None if backend == "scratch" else self.adapter,
                            precision=precision, base_url=None, api_key_env=None, context_length=None,
                            model=None if self.backend == "openai" else self.model)

    def with_model(self, name: str) -> "ChatSettings":
        """Switch model as `/model NAME` does: a folder, a .gguf file, 'default', a registered name
        (an endpoint's switches to the openai backend), or on the openai backend the server's model."""
        from backends.named_models import model_choice

        return self.replace(**model_choice(name, self.backend))

    def resumed(self, stored: "ChatSettings") -> "ChatSettings":
        """These settings with a stored conversation's own (CONVERSATION_FIELDS) taken over."""
        return self.replace(**{name: getattr(stored, name) for name in CONVERSATION_FIELDS})

    def to_dict(self) -> dict:
        """Plain JSON-ready data (what a conversation stores)."""
        data = asdict(self)
        data["sampling"] = self.sampling.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict, system_prompt: str | None = None) -> "ChatSettings":
        """Settings from stored data; older conversations' shapes load too, unknown keys are ignored.

        Earlier versions stored {"sampling", "max_new_tokens"} (the CLI) or the chat UI's dict with
        "docs" for the collection and "preset" when no explicit sampling was set.
        """
        data = dict(data or {})
        if "docs" in data and "collection" not in data:
            data["collection"] = data.pop("docs")
        sampling = data.get("sampling")
        if sampling:
            data["sampling"] = SamplingParams.from_dict(sampling)
        elif data.get("preset") in PRESETS:
            data["sampling"] = PRESETS[data["preset"]]
        else:
            data.pop("sampling", None)
        if system_prompt is not None:
            data["system_prompt"] = system_prompt
        data["attachments"] = tuple(data.get("attachments") or ())
        names = {f.name for f in fields(cls)}
        nullable = ("model", "adapter", "collection")
        return cls(**{k: v for k, v in data.items() if k in names and (v is not None or k in nullable)})
