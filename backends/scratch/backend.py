"""The scratch backend: our decoder and KV-cache engine behind the backend protocol."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

import torch

from assistant.errors import HearthError
from backends.base import GenerationParams, TokenStep
from backends.gguf import prepared_folder, source_of
from backends.registry import CPU_ONLY_PRECISIONS, PRECISIONS
from backends.scratch.engine import Engine
from backends.scratch.gguf_native import load_dequantized_model, load_native_model, open_gguf
from backends.scratch.model import DecoderLanguageModel
from backends.scratch import kernels
from backends.scratch.quantize import quantize_blocks, quantize_int8
from backends.scratch.weights import load_model
from backends.tokenizer import ChatTokenizer

log = logging.getLogger(__name__)

DEFAULT_CACHE_TOKENS = 8192


def apply_precision(model: DecoderLanguageModel, precision: str, gguf: Path | None = None) -> DecoderLanguageModel:
    """fp32 (reference), bf16 (weights and activations), int8 (int8 weights, bf16 activations), or
    q8 / q4 (32-value weight blocks through Hearth's kernels; `gguf`: the file whose blocks to load
    as they are, when the model folder was converted from one)."""
    if precision == "gguf":
        raise ValueError("the gguf precision is a GGUF file's own blocks: load it with gguf_native.load_native_model")
    if precision in ("q8", "q4"):
        model, from_file = quantize_blocks(model, precision, gguf)
        log.info("%s: %d layers loaded as the GGUF file's own blocks; kernels: %s", precision, from_file,
                 kernels.describe())
        return model
    if precision == "fp32":
        return model
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        return quantize_int8(model)
    raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")


class ScratchBackend:
    """Runs a native checkpoint, a Llama-family HF folder or a GGUF file through our engine.

    A GGUF file runs as it is (precision gguf, its default: gguf_native.py); other precisions of a
    GGUF file start from its weights dequantized to float32.

    `grounded_adapter`: a LoRA adapter for grounded answers (GenerationParams.grounded), as the hf
    backend applies it. Here it is merged into a second copy of the weights, in the same precision,
    built on the first grounded answer; plain chat keeps the base model. Grounded answers with it
    copy from their sources, so with the q8/q4 step kernels they are decoded with prompt-lookup
    speculation (the same tokens in fewer passes: speculation.py; docs/BENCHMARKS.md has its figures).
    """

    name = "scratch"
    adapter = None  # LoRA adapters are merged first (`hearth train merge`)

    def __init__(self, model_dir: str | Path, precision: str = "auto", max_cache_tokens: int = DEFAULT_CACHE_TOKENS,
                 device: str | None = None, grounded_adapter: str | Path | None = None, report=None):
        model_dir = Path(model_dir)
        self.model_dir = model_dir
        gguf_file = model_dir.is_file()
        if precision == "auto":
            precision = "gguf" if gguf_file else "fp32"
        if precision == "gguf" and not gguf_file:
            raise HearthError("--precision gguf runs a .gguf file as it is; this model is a folder "
                              "(use q4 or q8 for Hearth's block kernels)")
        gpu = torch.cuda.is_available() and precision not in CPU_ONLY_PRECISIONS
        self.device = device or ("cuda" if gpu else "cpu")
        if gguf_file:
            folder = prepared_folder(model_dir, report)
            self.tokenizer = ChatTokenizer.from_file(folder)
            gguf = open_gguf(model_dir, folder)
            if precision == "gguf":
                model = load_native_model(gguf)
            else:
                model = apply_precision(load_dequantized_model(gguf).fuse_for_inference().to(self.device), precision)
        else:
            self.tokenizer = ChatTokenizer.from_file(model_dir)
            model = load_model(model_dir).fuse_for_inference()
            model = apply_precision(model.to(self.device), precision, source_of(model_dir))
        self.precision = precision
        self.model_id = str(model_dir)
        self.context_length = min(model.config.context_length, max_cache_tokens)
        self.engine = Engine(model, max_len=self.context_length)
        self.grounded_adapter = str(grounded_adapter) if grounded_adapter else None
        self._grounded_model: DecoderLanguageModel | None = None
        self._grounded_engine: Engine | None = None
        self._grounded_lock = threading.Lock()
        self._preparing: threading.Thread | None = None

    def grounded_model(self) -> DecoderLanguageModel:
        """The base weights with the grounded-answer adapter merged, in the backend's precision (built once)."""
        with self._grounded_lock:
            if self._grounded_model is None:
                log.info("merging the grounded-answer adapter %s into a %s copy of the model",
                         self.grounded_adapter, self.precision)
                model = load_model(self.model_dir, Path(self.grounded_adapter)).fuse_for_inference()
                # q4 keeps the file's blocks where the adapter left the weights alone (quantize_blocks)
                self._grounded_model = apply_precision(model.to(self.device), self.precision, source_of(self.model_dir))
            return self._grounded_model

    def grounded_engine(self) -> Engine:
        """The engine of the merged weights (grounded_model), built once."""
        model = self.grounded_model()
        with self._grounded_lock:
            if self._grounded_engine is None:
                self._grounded_engine = Engine(model, max_len=self.context_length)
            return self._grounded_engine

    def prepare_grounded(self) -> threading.Thread | None:
        """Start building the grounded engine in the background, once (a grounded answer that comes
        first waits for it): the chat calls this when documents are attached, so the merge (seconds)
        happens while the user types instead of before the first grounded answer."""
        if not self.grounded_adapter or self._grounded_engine is not None or self._preparing is not None:
            return None

        def build() -> None:
            try:
                self.grounded_engine()
            except Exception:  # noqa: BLE001  the grounded answer that needs it raises it again, to the user
                log.warning("could not prepare the grounded-answer adapter", exc_info=True)

        self._preparing = threading.Thread(target=build, name="grounded-adapter-merge", daemon=True)
        self._preparing.start()
        return self._preparing

    def stream(self, prompt_ids: list[int], params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[TokenStep]:
        """Generate with prefix reuse: a follow-up turn prefills only its new tokens."""
        if params.grounded and self.grounded_adapter:
            engine = self.grounded_engine()
            return engine.generate(prompt_ids, params, self.tokenizer.stop_ids, cancel,
                                   speculate=engine.native is not None)
        return self.engine.generate(prompt_ids, params, self.tokenizer.stop_ids, cancel)
