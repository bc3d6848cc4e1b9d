"""Options shared by the commands that chat (ask, chat, eval answers), and the one place that
turns them into ChatSettings. Their defaults are None so that only what the user typed overrides
the settings a conversation already has; the help shows the real defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from assistant.config import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_POLICY, POLICIES
from assistant.errors import HearthError
from assistant.settings import ChatSettings
from backends.params import SamplingParams
from backends.registry import BACKENDS, DEFAULT_BACKEND, PRECISIONS

SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "repetition_penalty", "seed")  # SamplingParams fields
SETTINGS_OPTIONS = {  # argparse dest -> ChatSettings field
    "backend": "backend", "model": "model", "adapter": "adapter", "precision": "precision", "base_url": "base_url",
    "api_key_env": "api_key_env", "context_length": "context_length", "docs": "collection",
    "k": "k", "max_tokens": "max_new_tokens", "system": "system_prompt", "on_unsupported": "on_unsupported",
    "check": "check", "self_check": "self_check", "grounded_adapter": "grounded_adapter",
}


def add_model_options(p: argparse.ArgumentParser, remote: bool = True) -> None:
    """--backend, --model, --adapter, --precision; with `remote`, the openai backend's options too."""
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=BACKENDS if remote else tuple(b for b in BACKENDS if b != "openai"),
                   help="hf: transformers; scratch: our own decoder and KV cache; openai: a model behind an "
                        f"OpenAI-compatible endpoint such as Ollama, llama.cpp's server or vLLM (default: {DEFAULT_BACKEND})")
    g.add_argument("--model", metavar="PATH|NAME",
                   help="model folder, .gguf file (converted once) or a name from `hearth models list` "
                        "(default: the bundled SmolLM2-135M-Instruct); with --backend openai the model's name on the server")
    if remote:
        g.add_argument("--base-url", metavar="URL",
                       help="the endpoint of --backend openai, e.g. http://127.0.0.1:11434/v1")
        g.add_argument("--api-key-env", metavar="VAR",
                       help="environment variable holding the endpoint's API key (read when needed, never stored)")
        g.add_argument("--context-length", type=int, metavar="N",
                       help="the remote model's context in tokens (default: what the server reports, else 4096)")
    g.add_argument("--adapter", metavar="PATH", help="LoRA adapter folder to apply (hf backend)")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="scratch backend weights: auto (default: a .gguf file's own blocks, a folder's fp32), "
                        "gguf (a .gguf file's own Q4_K/Q5_0/Q6_K/Q8_0/... blocks through Hearth's kernels, mapped "
                        "from the file), fp32 (reference), bf16, int8 (PyTorch's int8 kernel), q8 / q4 (32-value "
                        "blocks through Hearth's own CPU kernels)")


def add_sampling_options(g) -> None:
    d = SamplingParams()
    g.add_argument("--temperature", type=float, help=f"0 = greedy (default {d.temperature})")
    g.add_argument("--top-k", type=int, help=f"keep the k most likely tokens (default {d.top_k}, 0 = off)")
    g.add_argument("--top-p", type=float, help=f"nucleus sampling mass (default {d.top_p} = off)")
    g.add_argument("--repetition-penalty", type=float,
                   help="make tokens already in the reply less likely: their logits are divided by this when "
                        f"positive, multiplied when negative (default {d.repetition_penalty}, 1 = off)")
    g.add_argument("--seed", type=int, help="seed for reproducible sampling")
    g.add_argument("--max-tokens", type=int, help=f"most tokens in a reply (default {DEFAULT_MAX_NEW_TOKENS})")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--system", help="system prompt (a continued conversation keeps its own unless this is given)")
    add_sampling_options(g)


def add_sources_option(g) -> None:
    g.add_argument("-k", "--sources", type=int, dest="k", help=f"sources per answer (default {DEFAULT_K})")


def add_docs_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("documents")
    g.add_argument("--docs", metavar="COLLECTION", help="answer from this document collection, with citations")
    g.add_argument("--file", action="append", metavar="FILE", dest="attach",
                   help="answer from this file (any type ingest reads; repeat for more), with citations, without "
                        "a collection; a continued conversation reads its files again")
    add_sources_option(g)
    g.add_argument("--on-unsupported", choices=POLICIES,
                   help="when a grounded answer's support score is below the threshold: mark its unsupported "
                        "sentences (annotate), retry once with a stricter instruction and keep the better answer "
                        "(regenerate), or answer \"I don't know based on the documents.\" (abstain); "
                        f"default: {DEFAULT_POLICY}")
    g.add_argument("--check", action="store_true", default=None,
                   help="also check answers given without --docs, against what you said in the conversation")
    g.add_argument("--no-grounded-adapter", action="store_false", dest="grounded_adapter", default=None,
                   help="answer from documents with the bundled model itself, not its grounded-answer adapter")
    g.add_argument("--self-check", type=int, metavar="N",
                   help="self-consistency: compare each checked answer with N re-sampled ones (costs N generations)")


def add_chat_options(p: argparse.ArgumentParser) -> None:
    """Every option that goes into ChatSettings, plus --conversation."""
    add_model_options(p)
    add_generation_options(p)
    p.add_argument("--conversation", type=int, metavar="ID",
                   help="continue a stored conversation, with the settings it was stored with (options given change them)")
    add_docs_options(p)


def chat_settings(args: argparse.Namespace, base: ChatSettings | None = None) -> ChatSettings:
    """`base` (defaults, or a stored conversation's) with the options the user gave; invalid values
    become a HearthError. Sampling options given change only those fields of base's sampling."""
    base = base or ChatSettings()
    changes = {field: getattr(args, dest) for dest, field in SETTINGS_OPTIONS.items()
               if getattr(args, dest, None) is not None}
    if getattr(args, "attach", None):
        from retrieval.collection import resolved

        changes["attachments"] = tuple(str(resolved(Path(f))) for f in args.attach)
        changes.setdefault("collection", None)  # files given replace a continued conversation's collection
    elif changes.get("collection"):
        changes["attachments"] = ()  # and a collection given replaces its files
    if "model" in changes:  # a registered name may bring its endpoint, or leave the openai backend
        from backends.named_models import model_choice

        chosen = model_choice(changes["model"], changes.get("backend", base.backend))
        changes = chosen | {k: v for k, v in changes.items() if k != "model"}  # other options given win
    given = {name: getattr(args, name) for name in SAMPLING_OPTIONS if getattr(args, name, None) is not None}
    try:
        if given:
            changes["sampling"] = SamplingParams.from_dict(base.sampling.to_dict() | given)
        return base.replace(**changes)
    except ValueError as exc:
        raise HearthError(str(exc)) from exc
