"""Models a user registered by name (`hearth models add`): a model folder, a GGUF file, or a model
behind an OpenAI-compatible endpoint. `--model NAME` and the chat's `/model NAME` accept them
everywhere; the names live in HEARTH_HOME/models.json. Loads no model code.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from assistant.config import ensure_dir, hearth_home
from assistant.errors import HearthError
from assistant.files import write_atomic

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
RESERVED = ("default",)  # `/model default` means the bundled model


@dataclass(frozen=True)
class NamedModel:
    """One registered model: `path` (a folder or a .gguf file), or `base_url` + `model` (an endpoint)."""

    name: str
    path: str | None = None
    base_url: str | None = None
    model: str | None = None  # the model's name on the endpoint
    api_key_env: str | None = None  # the variable holding its key (the key itself is never stored)
    context_length: int | None = None

    @property
    def kind(self) -> str:
        if self.base_url:
            return "endpoint"
        return "gguf" if str(self.path).lower().endswith(".gguf") else "folder"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "name"}


def registry_path() -> Path:
    return hearth_home() / "models.json"


def load() -> dict[str, NamedModel]:
    """Every registered model by name (none when the file does not exist)."""
    path = registry_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: NamedModel(name=name, **entry) for name, entry in data.items()}
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise HearthError(f"cannot read {path}: {exc}; fix or delete it") from exc


def get(name: str) -> NamedModel | None:
    """The registered model of that name, or None."""
    return load().get(name) if _NAME.match(name or "") else None


def _save(models: dict[str, NamedModel]) -> None:
    path = registry_path()
    ensure_dir(path.parent)
    write_atomic(path, json.dumps({n: m.to_dict() for n, m in sorted(models.items())}, indent=2) + "\n")


def add(entry: NamedModel, replace: bool = False) -> NamedModel:
    """Register a model (checked: the name, and that a local path exists)."""
    if not _NAME.match(entry.name) or entry.name in RESERVED:
        raise HearthError(f"{entry.name!r} cannot be a model name: use letters, digits, '.', '_', '-' or ':' "
                          f"(up to 64), and not {', '.join(RESERVED)}")
    if entry.base_url:
        from backends.registry import check_choice

        check_choice("openai", None, "fp32", entry.base_url, entry.model)  # the same checks as --backend openai
    else:
        from backends.gguf import is_gguf

        path = Path(entry.path or "").expanduser()
        if not path.exists():
            raise HearthError(f"{path} does not exist")
        if path.is_file() and not is_gguf(path):
            raise HearthError(f"{path} is neither a model folder nor a GGUF file")
        if path.is_dir() and (path / "adapter_config.json").is_file():
            raise HearthError(f"{path} is a LoRA adapter: use it with --adapter (or /adapter) on its base model")
        if path.is_dir() and not (path / "config.json").is_file():
            raise HearthError(f"{path} is not a model folder (no config.json)")
        entry = NamedModel(name=entry.name, path=str(path.resolve()))
    models = load()
    if entry.name in models and not replace:
        raise HearthError(f"a model named {entry.name!r} exists; remove it first (or pass --replace)")
    models[entry.name] = entry
    _save(models)
    return entry


def remove(name: str) -> NamedModel:
    """Forget a registered model (its files are not touched)."""
    models = load()
    if name not in models:
        raise HearthError(f"no model named {name!r}; `hearth models list` shows them")
    entry = models.pop(name)
    _save(models)
    return entry


def model_choice(name: str, backend: str) -> dict:
    """The ChatSettings fields `--model NAME` or `/model NAME` set while `backend` is in use: a registered
    endpoint switches to the openai backend with its URL; a registered local model (or a path, or
    'default') switches away from it; on the openai backend anything else is the server's model name."""
    entry = get(name)
    if entry is not None and entry.kind == "endpoint":
        return {"backend": "openai", "base_url": entry.base_url, "model": entry.model,
                "api_key_env": entry.api_key_env, "context_length": entry.context_length,
                "adapter": None, "precision": "auto"}
    if backend == "openai" and entry is None and name != "default":
        return {"model": name}
    local = {"model": None if name == "default" else (name if entry else str(Path(name).expanduser()))}
    if backend == "openai":
        local |= {"backend": "hf", "base_url": None, "api_key_env": None, "context_length": None}
    return local
