"""The one place that turns chat settings (backend, model, adapter, precision) into a loaded backend.

Importing this module loads no model code: the choices below are read by the command line,
the chat UI and the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from assistant.errors import HearthError, ModelNotFound

if TYPE_CHECKING:
    from backends.base import Backend

BACKENDS = ("hf", "scratch", "openai")  # openai: a model behind an OpenAI-compatible endpoint (remote.py)
DEFAULT_BACKEND = "hf"
# auto: the scratch engine runs a GGUF file's own blocks (gguf) and a model folder in fp32; the hf
# backend picks its own. All but auto and fp32 are the scratch engine's.
PRECISIONS = ("auto", "fp32", "bf16", "int8", "q8", "q4", "gguf")
DEFAULT_PRECISION = "auto"
ANY_BACKEND_PRECISIONS = ("auto", "fp32")
OWN_GROUNDED_ADAPTER = "a grounded-answer adapter of your own applies to the default model (hf or scratch backend)"
CPU_ONLY_PRECISIONS = ("int8", "q8", "q4", "gguf")  # CPU kernels: PyTorch's int8 one, Hearth's own q8/q4/GGUF


def check_choice(backend: str, adapter: str | None, precision: str, base_url: str | None = None,
                 model: str | None = None, remote_options: bool = False) -> None:
    """Raise a HearthError for a backend, adapter, precision and endpoint that do not go together.
    `remote_options`: whether options only the openai backend takes (key variable, context length) were given."""
    if backend not in BACKENDS:
        raise HearthError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}.")
    if precision not in PRECISIONS:
        raise HearthError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")
    if backend == "openai":
        if not base_url or not model:
            raise HearthError("--backend openai needs --base-url URL (e.g. http://127.0.0.1:11434/v1 for Ollama) "
                              "and --model NAME (a model the server lists)")
        if not base_url.startswith(("http://", "https://")):
            raise HearthError(f"--base-url must start with http:// or https://, got {base_url!r}")
        if adapter is not None or precision not in ANY_BACKEND_PRECISIONS:
            raise HearthError("--adapter and --precision apply to local models, not to --backend openai")
        return
    if base_url is not None or remote_options:
        raise HearthError("--base-url, --api-key-env and --context-length apply to --backend openai")
    if backend == "scratch" and adapter is not None:
        raise HearthError("the scratch backend takes merged weights: run `hearth train merge` first.")
    if backend == "hf" and precision not in ANY_BACKEND_PRECISIONS:
        raise HearthError("--precision applies to the scratch backend; the hf backend picks bf16 on GPU itself.")


def resolve_model(model: str | Path | None, report: Callable[[str], None] | None = None) -> Path:
    """A model folder path for a folder, a GGUF file (converted on first use), a name registered with
    `hearth models add` or installed with `hearth models install`, or None: the bundled default
    (prepared on first use)."""
    path = resolve_source(model, report)
    if path.is_file():
        from backends.gguf import converted_folder

        return converted_folder(path, report)
    return path


def resolve_source(model: str | Path | None, report: Callable[[str], None] | None = None) -> Path:
    """What a model choice names, unconverted: a model folder or a GGUF file."""
    if model is None:
        from backends.hf.default_model import ensure_default_model

        return ensure_default_model(report)
    path = Path(model).expanduser()
    from backends import catalog

    voice = catalog.get(str(model))
    if voice is not None and not path.exists():
        if not catalog.is_installed(voice):
            raise ModelNotFound(f"{voice.name} is not installed: run `hearth models install {voice.name}` "
                                f"({voice.size / 2**30:.1f} GB download, once)")
        return catalog.installed_path(voice)
    if not path.exists():
        from backends import named_models

        entry = named_models.get(str(model))
        if entry is None:
            raise ModelNotFound(f"model {model} does not exist: pass a model folder, a .gguf file, or a name "
                                "`hearth models list` shows.")
        if entry.kind == "endpoint":
            raise ModelNotFound(f"{model} is a model behind an endpoint; it runs on --backend openai")
        path = Path(entry.path)
        if not path.exists():
            raise ModelNotFound(f"model {model} is registered at {path}, which no longer exists "
                                f"(`hearth models remove {model}`)")
    if path.is_file():
        from backends.gguf import is_gguf

        if not is_gguf(path):
            raise ModelNotFound(f"{path} is a file but not a GGUF model; pass a model folder or a .gguf file.")
    return path


def load_backend(
    name: str = DEFAULT_BACKEND,
    model: str | Path | None = None,
    adapter: str | Path | None = None,
    report: Callable[[str], None] | None = None,
    precision: str = DEFAULT_PRECISION,
    grounded_adapter: str | Path | None = None,
) -> "Backend":
    """Load a backend by name; errors a user can cause raise HearthError. `grounded_adapter`: the
    default model's grounded-answer adapter in place of the one that ships (hf and scratch backends)."""
    check_choice(name, None if adapter is None else str(adapter), precision)
    if grounded_adapter is not None and (name == "openai" or model is not None or adapter is not None):
        raise HearthError(OWN_GROUNDED_ADAPTER)
    if adapter is not None and not Path(adapter).expanduser().exists():
        raise ModelNotFound(f"adapter folder {adapter} does not exist.")
    if grounded_adapter is not None and not (Path(grounded_adapter).expanduser() / "adapter_config.json").is_file():
        raise ModelNotFound(f"{grounded_adapter} is not a LoRA adapter folder (no adapter_config.json).")
    source = resolve_source(model, report)
    from backends.hf.default_model import grounded_adapter_dir

    grounded = (Path(grounded_adapter).expanduser() if grounded_adapter else grounded_adapter_dir()) \
        if model is None and adapter is None else None
    if name == "scratch":
        from backends.scratch.backend import ScratchBackend

        backend = ScratchBackend(source, precision=precision, grounded_adapter=grounded, report=report)
    else:
        from backends.gguf import converted_folder
        from backends.hf.backend import HFBackend

        model_dir = converted_folder(source, report) if source.is_file() else source
        backend = HFBackend(model_dir, adapter=Path(adapter).expanduser() if adapter else None,
                            grounded_adapter=grounded)
    if model is not None:  # as the user named it (a .gguf file, a registered name), not the folder it became
        backend.model_id = str(model)
    return backend


def load_for(settings, report: Callable[[str], None] | None = None,
             grounded_adapter: str | Path | None = None) -> "Backend":
    """The backend chat settings (assistant.settings.ChatSettings) name: backend, model, adapter,
    precision, or an endpoint; `grounded_adapter` as in load_backend."""
    if grounded_adapter is not None and settings.backend == "openai":
        raise HearthError(OWN_GROUNDED_ADAPTER)
    if settings.backend == "openai":
        from backends.remote import OpenAIBackend

        return OpenAIBackend(settings.base_url, settings.model, settings.api_key_env, settings.context_length)
    return load_backend(settings.backend, settings.model, settings.adapter, report=report,
                        precision=settings.precision, grounded_adapter=grounded_adapter)
