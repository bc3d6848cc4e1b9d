"""The chat tokenizer: a `tokenizer.json`, and how it renders a conversation: ChatML (Hearth's own
format, with the special tokens it owns) or the chat template the model folder carries."""

from __future__ import annotations

import shutil
from pathlib import Path

from tokenizers import Tokenizer

from assistant.errors import ModelNotFound
from backends.chat_template import ChatTemplate, read_template

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")  # what ChatTokenizer reads


def copy_tokenizer(source: Path, target: Path) -> None:
    """Copy a model folder's tokenizer and chat template into another folder (a finetuned model's)."""
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, Path(target) / name)


class ChatTokenizer:
    """Wraps a Hugging Face `tokenizers.Tokenizer`; ordinary text never yields special tokens."""

    def __init__(self, tokenizer: Tokenizer, template: "ChatTemplate | None" = None):
        self._tok = tokenizer
        # Text that contains "<|im_start|>" is encoded as plain characters, so a user message
        # or a document can never open a fake turn. Control tokens are inserted by id only.
        self._tok.encode_special_tokens = True
        self.template = template  # None: ChatML (assistant/chatml.py)
        if template is not None:
            self.im_start_id = self.im_end_id = None
            self.stop_ids = template.stop_ids
            self.eos_id = self.pad_id = template.eos_id
            return
        self.im_start_id = self._require(IM_START)
        self.im_end_id = self._require(IM_END)
        eot = tokenizer.token_to_id(ENDOFTEXT)
        self.eos_id = eot if eot is not None else self.im_end_id
        self.pad_id = self.im_end_id
        self.stop_ids = frozenset({self.im_end_id})

    @classmethod
    def from_file(cls, path: str | Path) -> "ChatTokenizer":
        """Load `tokenizer.json`, or a model folder's tokenizer with its chat template: a template
        that renders ChatML (or none) means ChatML, any other is used as it is."""
        path = Path(path)
        folder = path if path.is_dir() else None
        if folder is not None:
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ModelNotFound(f"no tokenizer.json at {path}; a model folder needs one.")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception on a corrupt file
            raise ModelNotFound(f"cannot read tokenizer {path}: {exc}") from exc
        source = read_template(folder) if folder is not None else None
        if source is not None:
            template = ChatTemplate(source, tok, folder)
            if not (template.is_chatml and tok.token_to_id(IM_START) is not None):
                return cls(tok, template)
        return cls(tok)

    def _require(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ModelNotFound(
                f"the tokenizer has no {token} token and no chat template of its own; Hearth needs a "
                "ChatML tokenizer (train one with `hearth train tokenizer`) or a model folder with a chat template."
            )
        return token_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer`."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text; special-token strings inside it stay plain text."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        """Text of token ids."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, token: str) -> int | None:
        """Id of a vocabulary entry, or None."""
        return self._tok.token_to_id(token)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json."""
        self._tok.save(str(path))


class StreamDecoder:
    """Turns a stream of token ids into text pieces without splitting UTF-8 characters.

    Decodes only a short window (from the last emitted boundary), so the cost per token does
    not grow with the length of the reply.
    """

    def __init__(self, tokenizer: ChatTokenizer):
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window still needed for context
        self._read = 0  # ids whose text was already emitted

    def push(self, token_id: int) -> str:
        """Add one id; return the new text that is now complete (possibly empty)."""
        self._ids.append(token_id)
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        full_text = self._tok.decode(self._ids[self._prefix :])
        if full_text.endswith("\ufffd") or len(full_text) <= len(prefix_text):
            return ""  # an incomplete multi-byte character: wait for more ids
        self._prefix, self._read = self._read, len(self._ids)
        return full_text[len(prefix_text) :]
