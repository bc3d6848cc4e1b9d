"""Prompting a model with the chat template its tokenizer carries (Llama 3, Gemma, Mistral, Qwen...).

Hearth's own format is ChatML (assistant/chatml.py). A transformers folder whose tokenizer carries a
Jinja chat template (`chat_template` in tokenizer_config.json, or chat_template.jinja) that renders
something other than ChatML is prompted with that template instead.

Rendering keeps ChatML's guarantee that text never becomes a control token: the template is rendered
with a placeholder in place of each message's content; the template's own markup between the
placeholders is encoded with its special tokens (inserted by id), and each content as plain text.
That also tells exactly which ids are a reply: an assistant content, and the markup after it up to
and including the first end-of-turn token (what supervised finetuning learns).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer

from assistant.errors import ModelNotFound

_PLACEHOLDER = "\x00HEARTH{}\x00"
_SPLIT = re.compile("\x00HEARTH(\\d+)\x00")
# Tokens that end a turn in the common templates; those the template writes stop a reply, with the
# tokenizer's eos token and generation_config.json's eos ids.
END_OF_TURN = ("<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|im_end|>", "<|end|>", "</s>", "<|endoftext|>",
               "<|end_of_text|>")


def read_template(folder: Path) -> str | None:
    """The chat template a model folder's tokenizer carries, or None."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = _tokenizer_config(folder)
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template.strip() else None


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFound(f"cannot read {path}: {exc}") from exc


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class ChatTemplate:
    """A Jinja chat template bound to its tokenizer; `encode` gives ids, assistant mask and lengths."""

    def __init__(self, source: str, tokenizer: Tokenizer, folder: Path | None = None):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.source = source
        self._tok = tokenizer
        config = _tokenizer_config(folder) if folder else {}
        self.bos_token = _token_text(config.get("bos_token")) or ""
        self.eos_token = _token_text(config.get("eos_token")) or ""
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        self._template = env.from_string(source)
        self._trims = "trim" in source  # Llama 3 and Gemma strip each message; placeholders hide that
        special = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        self._special = special
        self._special_re = re.compile("|".join(re.escape(t) for t in sorted(special, key=len, reverse=True))) \
            if special else None
        stops = {special[t] for t in END_OF_TURN if t in special and t in source}
        if self.eos_token in special:
            stops.add(special[self.eos_token])
        stops |= _generation_eos(folder)
        if not stops:
            raise ModelNotFound("the tokenizer's chat template has no end-of-turn token Hearth recognises")
        self.stop_ids = frozenset(stops)
        eos = special.get(self.eos_token)
        self.eos_id = eos if eos in self.stop_ids else min(self.stop_ids)

    # -- rendering --------------------------------------------------------------------------------

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The template's text for the messages; a template that takes no system message (Gemma)
        gets the system prompt at the start of the first user message, as its makers advise."""
        from jinja2 import TemplateError

        try:
            return self._render(messages, add_generation_prompt)
        except TemplateError:
            if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
                raise
            folded = {"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
            return self._render([folded] + messages[2:], add_generation_prompt)

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     bos_token=self.bos_token, eos_token=self.eos_token)

    @cached_property
    def is_chatml(self) -> bool:
        """Whether the template renders exactly Hearth's ChatML (SmolLM2, Qwen with a system prompt):
        then our own ChatML code prompts the model, identically."""
        from assistant import chatml

        probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                 {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
        try:
            return self.render(probe, True) == chatml.render(probe, True)
        except Exception:  # a template that cannot render the probe is not ChatML
            return False

    # -- encoding ---------------------------------------------------------------------------------

    def encode(self, messages: Iterable, add_generation_prompt: bool = False):
        """EncodedChat of the messages (ChatMessage or dicts): ids, assistant mask, and how many ids
        each message accounts for (the markup after a content counts with it; the first message
        also counts what comes before it)."""
        from assistant.chatml import EncodedChat, as_messages

        msgs = as_messages(messages)
        contents = [m.content.strip() if self._trims else m.content for m in msgs]
        text = self.render([{"role": m.role, "content": _PLACEHOLDER.format(i)} for i, m in enumerate(msgs)],
                           add_generation_prompt)
        parts: list[str] = []
        pos = 0
        markup_specials: list[tuple[int, int, int]] = []  # (start, end, id) of the template's control tokens
        spans: dict[int, tuple[int, int]] = {}  # message index -> its content's characters
        for k, piece in enumerate(_SPLIT.split(text)):  # markup, index, markup, index, ..., markup
            if k % 2 == 0:
                if self._special_re is not None:
                    markup_specials += [(pos + m.start(), pos + m.end(), self._special[m.group()])
                                        for m in self._special_re.finditer(piece)]
            else:
                i = int(piece)
                if i in spans or i >= len(msgs):
                    raise ModelNotFound("the model's chat template repeats a message; Hearth cannot prompt it")
                piece = contents[i]
                spans[i] = (pos, pos + len(piece))
            parts.append(piece)
            pos += len(piece)
        if len(spans) < len(msgs):
            missing = next(m.role for i, m in enumerate(msgs) if i not in spans)
            raise ModelNotFound(f"the model's chat template leaves out {missing} messages; Hearth cannot prompt it")
        full = "".join(parts)
        # Split only at the template's own control tokens (as a Hugging Face tokenizer splits at its
        # special tokens); everything between, message text included, is plain text.
        ids: list[int] = []
        starts: list[int] = []
        cursor = 0
        for start, end, token_id in markup_specials + [(len(full), len(full), None)]:
            if start > cursor:
                enc = self._tok.encode(full[cursor:start], add_special_tokens=False)
                ids += enc.ids
                starts += [cursor + offset[0] for offset in enc.offsets]
            if token_id is not None:
                ids.append(token_id)
                starts.append(start)
            cursor = end
        out = EncodedChat(ids=ids, assistant_mask=[False] * len(ids), lengths=[0] * len(msgs))
        order = sorted(spans, key=lambda i: spans[i][0])
        owner_at = [spans[i][0] for i in order]
        for n, start in enumerate(starts):
            out.lengths[order[max(bisect_right(owner_at, start) - 1, 0)]] += 1
        for i, (a, b) in spans.items():
            if msgs[i].role != "assistant":
                continue
            limit = min((other for other, _ in spans.values() if other > a), default=len(full) + 1)
            reply = range(bisect_left(starts, a), bisect_left(starts, limit))
            end = next((n for n in reply if starts[n] >= b and ids[n] in self.stop_ids), None)
            for n in reply:  # the reply's text, and what follows it up to its end-of-turn token
                if starts[n] < b or (end is not None and n <= end):
                    out.assistant_mask[n] = True
        return out


def _raise(message: str):
    from jinja2 import TemplateError

    raise TemplateError(message)


def _generation_eos(folder: Path | None) -> set[int]:
    """End ids generation_config.json names (Llama 3 lists several)."""
    path = folder / "generation_config.json" if folder else None
    if not path or not path.is_file():
        return set()
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, json.JSONDecodeError):
        return set()
    values = value if isinstance(value, list) else [value]
    return {int(v) for v in values if isinstance(v, int)}
