"""Builders for tiny real models and tokenizers that tests create on the fly."""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch

from finetune.tokenizer import train_bpe

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Hearth is a private assistant that runs on your own computer.",
    "def add(a, b):\n    return a + b\n",
    "Le café est très bon. 東京は日本の首都です。",
    "system user assistant You are a helpful assistant.",
] * 20


def build_tokenizer(path: Path, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE with ChatML specials and save tokenizer.json in `path`."""
    path.mkdir(parents=True, exist_ok=True)
    train_bpe(CORPUS, vocab_size=vocab_size).save(str(path / "tokenizer.json"))
    return path


def build_tiny_llama(path: Path, seed: int = 0, context: int = 256) -> Path:
    """A randomly initialised 2-layer Llama (GQA) saved as a HF folder with our tokenizer."""
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tokenizer(path)
    vocab = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab_size()
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


class ScriptedBackend:
    """A backend that replies with fixed texts in turn (for a deterministic answer to check).

    It uses a real tokenizer and yields real token ids; `prompts` records what it was asked.
    """

    name = "scripted"
    model_id = "scripted"
    precision = "fp32"
    adapter = None

    def __init__(self, tokenizer, replies: list[str], context_length: int = 4096):
        self.tokenizer = tokenizer
        self.replies = list(replies)
        self.context_length = context_length
        self.prompts: list[str] = []

    def stream(self, prompt_ids, params, cancel=None):
        from backends.base import TokenStep

        self.prompts.append(self.tokenizer.decode(prompt_ids, skip_special=False))
        reply = self.replies.pop(0)
        for token in self.tokenizer.encode(reply) + [self.tokenizer.im_end_id]:
            yield TokenStep(token, 0.0)


@dataclass
class Run:
    """What a `hearth` command did: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def hearth(*args, home: Path | None = None, stdin: str | None = None, check: bool = True) -> Run:
    """Run the `hearth` command in this process through `main(argv)`, output captured.

    HEARTH_HOME is `home` when given, else the test's own (the autouse fixture's)."""
    from assistant.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, os.environ.get("HEARTH_HOME")
    sys.stdin = io.StringIO(stdin or "")
    if home is not None:
        os.environ["HEARTH_HOME"] = str(home)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        sys.stdin = saved[0]
        if saved[1] is None:
            os.environ.pop("HEARTH_HOME", None)
        else:
            os.environ["HEARTH_HOME"] = saved[1]
    run = Run(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"hearth {args} failed ({code}):\n{run.stderr}")
    return run


def build_tiny_llama_gguf(folder: Path, gguf_path: Path, tokenizer_from: Path, seed: int = 0) -> tuple[Path, Path]:
    """A randomly initialised 2-layer Llama with the bundled SmolLM2's tokenizer, written twice: as a
    transformers folder (safetensors) and as an F32 GGUF file laid out as llama.cpp's converter does
    (q/k rows permuted for its rotary layout), with the bundled GGUF's tokenizer fields."""
    import shutil

    import gguf
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from backends.hf.default_model import bundled_gguf

    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer_from / name).is_file():
            shutil.copyfile(tokenizer_from / name, folder / name)

    def permute(w, heads):  # llama.cpp's convert_hf_to_gguf: HF rotary halves -> interleaved pairs
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(str(gguf_path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, field in gguf.GGUFReader(str(bundled_gguf())).fields.items():
        if key.startswith("tokenizer."):
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=field.types[-1] if len(field.types) > 1 else None)
    state = load_file(folder / "model.safetensors")
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(config.num_hidden_layers):
        names |= {f"model.layers.{i}.{ours}.weight": f"blk.{i}.{theirs}.weight" for ours, theirs in parts.items()}
    for name, tensor in state.items():
        array = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            array = permute(array, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            array = permute(array, config.num_key_value_heads)
        writer.add_tensor(names[name], array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return folder, gguf_path
