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


def _add_bundled_tokenizer(writer) -> None:
    """The bundled SmolLM2 GGUF's tokenizer fields (vocabulary, merges, ChatML template) into a writer."""
    import gguf

    from backends.hf.default_model import bundled_gguf

    for key, field in gguf.GGUFReader(str(bundled_gguf())).fields.items():
        if key.startswith("tokenizer."):
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=field.types[-1] if len(field.types) > 1 else None)


# Each block type the scratch engine runs natively, somewhere in the tiny qwen2 file
TINY_QWEN2_TYPES = {"token_embd": "Q5_0", "attn_q": "Q4_K", "attn_k": "Q5_0", "attn_v": "Q8_0", "attn_output": "Q6_K",
                    "ffn_gate": "Q4_K", "ffn_up": "Q4_0", "ffn_down": "Q6_K", "ffn_up.1": "Q4_1", "attn_v.1": "F16"}


def random_blocks(type_name: str, rows: int, cols: int, rng) -> "np.ndarray":
    """Random valid GGUF blocks of a type for a (rows, cols) tensor, (rows, bytes) uint8: random bits
    with small finite fp16 scales (a K-quant's d and dmin, a block's d and m)."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    kind = GGMLQuantizationType[type_name]
    values, size = GGML_QUANT_SIZES[kind]
    if type_name in ("F32", "F16", "BF16"):
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float16 if type_name == "F16" else np.float32)
    blocks = rng.integers(0, 256, (rows * cols // values, size), dtype=np.uint8)

    def halves(count, scale):  # fp16 values in [0.2, 1) * scale, as bytes
        return (rng.uniform(0.2, 1.0, count) * scale).astype(np.float16).view(np.uint8).reshape(-1, 2)

    n = blocks.shape[0]
    if type_name == "Q6_K":
        blocks[:, 208:210] = halves(n, 2e-4)
        blocks[:, 192:208] = rng.integers(-20, 20, (n, 16)).astype(np.int8).view(np.uint8)
    elif type_name == "Q4_K":
        blocks[:, 0:2], blocks[:, 2:4] = halves(n, 2e-4), halves(n, 1e-3)
    else:
        blocks[:, 0:2] = halves(n, 4e-3)
        if type_name == "Q4_1":
            blocks[:, 2:4] = halves(n, 1e-2)
    return blocks.reshape(rows, -1)


def build_tiny_qwen2_gguf(path: Path, seed: int = 0, tied: bool = True) -> Path:
    """A random 2-block qwen2-architecture GGUF file in mixed block types (TINY_QWEN2_TYPES), with Q/K/V
    biases and the bundled SmolLM2's tokenizer (ChatML), written with the gguf package's writer."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab, dim, hidden, blocks = 49152, 256, 512, 2
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(blocks)
    writer.add_context_length(512)
    writer.add_embedding_length(dim)
    writer.add_feed_forward_length(hidden)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_freq_base(1000000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    _add_bundled_tokenizer(writer)

    def add(name: str, kind: str, rows: int, cols: int) -> None:
        data = random_blocks(kind, rows, cols, rng)
        if kind in ("F32", "F16"):
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[kind])

    add("token_embd.weight", TINY_QWEN2_TYPES["token_embd"], vocab, dim)
    if not tied:
        add("output.weight", "Q8_0", vocab, dim)
    writer.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32))
    shapes = {"attn_q": (dim, dim), "attn_k": (128, dim), "attn_v": (128, dim), "attn_output": (dim, dim),
              "ffn_gate": (hidden, dim), "ffn_up": (hidden, dim), "ffn_down": (dim, hidden)}
    for i in range(blocks):
        for part, (rows, cols) in shapes.items():
            add(f"blk.{i}.{part}.weight", TINY_QWEN2_TYPES.get(f"{part}.{i}", TINY_QWEN2_TYPES[part]), rows, cols)
        for part, rows in (("attn_q", dim), ("attn_k", 128), ("attn_v", 128)):
            writer.add_tensor(f"blk.{i}.{part}.bias", (0.1 * rng.standard_normal(rows)).astype(np.float32))
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{norm}.weight", (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


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
    _add_bundled_tokenizer(writer)
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
