"""Load and save DecoderLanguageModel weights: native checkpoints and Llama-family HF folders.

A native checkpoint is a folder with config.json (our ModelConfig, "format": "hearth-scratch"),
model.safetensors and tokenizer.json. Never pickles.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from assistant.errors import ModelNotFound
from backends.scratch.config import FORMAT, ModelConfig
from backends.scratch.model import DecoderLanguageModel

LLAMA_TYPES = ("llama", "mistral", "qwen2")


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelNotFound(f"{folder} has no config.json; pass a Hearth checkpoint or a Llama-family model folder.")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFound(f"cannot read {path}: {exc}") from exc


def config_from_hf(hf: dict) -> ModelConfig:
    """Our ModelConfig for a Llama-family transformers config.json."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise ModelNotFound(f"rope scaling {rope.get('rope_type')!r} is not supported by the scratch backend")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        emb_dim=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        num_blocks=hf["num_hidden_layers"],
        mlp="swiglu",
        mlp_hidden=hf["intermediate_size"],
        mlp_bias=bool(hf.get("mlp_bias", False)),
        attn_bias=bool(hf.get("attention_bias", hf.get("model_type") == "qwen2")),
        rope_theta=float(theta),
        rope_pairing="half",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        final_norm=True,
        context_length=int(hf.get("max_position_embeddings", 2048)),
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
    )


def _hf_name_map(config: ModelConfig) -> dict[str, str]:
    """Our parameter name -> transformers parameter name."""
    names = {"embedding.weight": "model.embed_tokens.weight", "final_norm.scale": "model.norm.weight"}
    if not config.tie_embeddings:
        names["output.weight"] = "lm_head.weight"
    parts = {
        "attention.W_Q": "self_attn.q_proj", "attention.W_K": "self_attn.k_proj",
        "attention.W_V": "self_attn.v_proj", "attention.W_O": "self_attn.o_proj",
        "mlp.W_1": "mlp.gate_proj", "mlp.W_3": "mlp.up_proj", "mlp.W_2": "mlp.down_proj",
    }
    for i in range(config.num_blocks):
        names[f"blocks.{i}.norm1.scale"] = f"model.layers.{i}.input_layernorm.weight"
        names[f"blocks.{i}.norm2.scale"] = f"model.layers.{i}.post_attention_layernorm.weight"
        for ours, theirs in parts.items():
            names[f"blocks.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
            biased = config.attn_bias if ours in ("attention.W_Q", "attention.W_K", "attention.W_V") else (
                config.mlp_bias if ours.startswith("mlp") else False)
            if biased:
                names[f"blocks.{i}.{ours}.bias"] = f"model.layers.{i}.{theirs}.bias"
    return names


def _load_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelNotFound(f"{folder} has no .safetensors weights")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(f))
        except Exception as exc:
            raise ModelNotFound(f"corrupt weights file {f}: {exc}") from exc
    return tensors


def _merged_tensors(folder: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """The folder's weights with a LoRA adapter merged into them (peft's merge), by HF name."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from backends.hf.peft_quiet import quiet_peft

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with quiet_peft():
        return PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict()


def load_hf_llama(folder: Path, adapter: Path | None = None) -> DecoderLanguageModel:
    """A Llama-family transformers folder mapped onto our model (`adapter`: a LoRA adapter trained on
    it, merged into the weights)."""
    hf = _read_config(folder)
    if hf.get("model_type") not in LLAMA_TYPES:
        raise ModelNotFound(f"{folder} holds a {hf.get('model_type')!r} model; the scratch backend reads {LLAMA_TYPES}.")
    config = config_from_hf(hf)
    tensors = _merged_tensors(folder, adapter) if adapter is not None else _load_safetensors(folder)
    state = {}
    for ours, theirs in _hf_name_map(config).items():
        if theirs not in tensors:
            raise ModelNotFound(f"{folder} is missing weight {theirs}")
        state[ours] = tensors[theirs].float()
    return _build(config, state)


def _build(config: ModelConfig, state: dict[str, torch.Tensor]) -> DecoderLanguageModel:
    with torch.device("meta"):
        model = DecoderLanguageModel(config)
    model = model.to_empty(device="cpu")
    if config.tie_embeddings:
        state = {k: v for k, v in state.items() if k != "output.weight"}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not (config.tie_embeddings and m == "output.weight")]
    if missing or unexpected:
        raise ModelNotFound(f"checkpoint does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_embeddings:
        model.output.weight = model.embedding.weight
    return model.eval()


def load_native(folder: Path) -> DecoderLanguageModel:
    """A checkpoint written by save_native."""
    config = ModelConfig.from_dict(_read_config(folder))
    path = folder / "model.safetensors"
    if not path.is_file():
        raise ModelNotFound(f"{folder} has no model.safetensors")
    try:
        state = load_file(path)
    except Exception as exc:
        raise ModelNotFound(f"corrupt checkpoint {path}: {exc}") from exc
    return _build(config, state)


def is_native(folder: Path) -> bool:
    """True when the folder's config.json is one of ours."""
    return _read_config(folder).get("format") == FORMAT


def load_model(folder: str | Path, adapter: Path | None = None) -> DecoderLanguageModel:
    """Native checkpoint or Llama-family HF folder, whichever the folder holds (`adapter`: a LoRA
    adapter to merge, for an HF folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFound(f"model folder {folder} does not exist.")
    if is_native(folder):
        if adapter is not None:
            raise ModelNotFound(f"{folder} is a Hearth checkpoint; merge adapters into it with `hearth train merge`.")
        return load_native(folder)
    return load_hf_llama(folder, adapter)


def save_native(model: DecoderLanguageModel, folder: str | Path, tokenizer_json: Path | None = None,
                extra_files: dict[str, bytes] | None = None) -> Path:
    """Write config.json, model.safetensors (and tokenizer.json) atomically into `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if model.config.tie_embeddings:
            state.pop("output.weight", None)
        save_file(state, tmp / "model.safetensors", metadata={"format": FORMAT})
        (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
        if tokenizer_json is not None:
            shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
