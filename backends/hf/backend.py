"""Run any transformers causal LM folder with our decode loop and KV cache."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

import torch

from assistant.errors import ModelNotFound
from backends.base import GenerationParams, TokenStep
from backends.sampling import decode_loop
from backends.speculation import SpeculationStats, speculative_loop
from backends.tokenizer import ChatTokenizer

log = logging.getLogger(__name__)


def pick_device() -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when available, else CPU fp32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


class HFBackend:
    """A transformers model folder (safetensors + config.json + tokenizer.json)."""

    name = "hf"

    def __init__(self, model_dir: str | Path, adapter: str | Path | None = None,
                 grounded_adapter: str | Path | None = None):
        """`grounded_adapter`: a LoRA adapter applied only to grounded answers (GenerationParams.grounded),
        when no `adapter` is given."""
        from transformers import AutoModelForCausalLM

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ModelNotFound(
                f"{model_dir} is not a model folder (no config.json). "
                "Pass --model with a Hugging Face model folder."
            )
        self.tokenizer = ChatTokenizer.from_file(model_dir)
        self.device, dtype = pick_device()
        self.precision = "bf16" if dtype == torch.bfloat16 else "fp32"  # what pick_device chose
        try:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        except Exception as exc:
            raise ModelNotFound(f"cannot load the model in {model_dir}: {exc}") from exc
        if adapter is not None:
            model = self._with_adapter(model, Path(adapter))
        elif grounded_adapter is not None:
            model = self._with_adapter(model, Path(grounded_adapter))
        self.grounded_adapter = str(grounded_adapter) if adapter is None and grounded_adapter else None
        self.model = model.to(self.device).eval()
        self.model_id = str(model_dir)
        self.adapter = str(adapter) if adapter else None
        config = model.config
        self.context_length = int(getattr(config, "max_position_embeddings", 2048))
        self.vocab_size = int(config.vocab_size)

    @staticmethod
    def _with_adapter(model, adapter: Path):
        from peft import PeftModel

        from backends.hf.peft_quiet import quiet_peft

        if not (adapter / "adapter_config.json").is_file():
            raise ModelNotFound(
                f"{adapter} is not a LoRA adapter (no adapter_config.json). "
                "Pass --adapter with a folder written by `hearth train sft --lora`."
            )
        try:
            with quiet_peft():
                return PeftModel.from_pretrained(model, adapter)
        except Exception as exc:
            raise ModelNotFound(f"cannot apply the adapter {adapter}: {exc}") from exc

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """Logits at every position of one sequence (no cache), shape (len, vocab); the base model's
        when the only adapter is the grounded-answer one."""
        from contextlib import nullcontext

        input_ids = torch.tensor([ids], device=self.device)
        with self.model.disable_adapter() if self.grounded_adapter else nullcontext():
            return self.model(input_ids=input_ids, use_cache=False).logits[0].float()

    def stream(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenStep]:
        """Prefill the prompt once, then decode token by token with the model's KV cache."""
        from contextlib import nullcontext

        plain = self.grounded_adapter is not None and not params.grounded
        with self.model.disable_adapter() if plain else nullcontext():  # the base model for other prompts
            # the adapter's grounded answers copy their sources: prompt-lookup speculation checks
            # several copied tokens in one forward pass (speculation.py)
            speculate = bool(self.grounded_adapter) and params.grounded
            yield from self._stream(prompt_ids, params, cancel, speculate=speculate)

    def _stream(self, prompt_ids: list[int], params: GenerationParams, cancel: threading.Event | None,
                speculate: bool = False, stats: "SpeculationStats | None" = None) -> Iterator[TokenStep]:
        from transformers import DynamicCache

        cache = DynamicCache()

        def forward(ids: torch.Tensor, keep: int = 0) -> torch.Tensor:
            """Next-token logits at each of ids (1, n) (at the last `keep` only, if given), appended to the cache."""
            with torch.inference_mode():
                return self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=keep).logits[0].float()

        first = forward(torch.tensor([prompt_ids], device=self.device), keep=1)[-1]
        if speculate:
            yield from speculative_loop(prompt_ids, first, lambda ids: forward(torch.tensor([ids], device=self.device)),
                                        lambda n: cache.crop(-n) if n else None,  # forget the last n
                                        lambda: self.context_length - cache.get_seq_length(), params,
                                        self.vocab_size, self.tokenizer.stop_ids, cancel, stats)
            return
        yield from decode_loop(first, lambda token: forward(token.view(1, 1))[-1], params, self.vocab_size,
                               self.tokenizer.stop_ids, cancel)
