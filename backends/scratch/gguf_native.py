"""A GGUF file run as it is on the scratch engine: its tensors mapped from disk, multiplied in their own
block types (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K; F32/F16/BF16 as floats) by Hearth's kernels
(kernels/ggml.cpp). Nothing is dequantised to a float copy, so a process holds about the file's size.

The model's shape comes from the file's metadata (llama, mistral and qwen2 families: Qwen2's Q/K/V
biases, tied or separate output, its rope theta). The first open of a file reads its metadata with
the `gguf` package (seconds for a 150k-token vocabulary) and writes a small index beside the
tokenizer Hearth extracts (backends/gguf.py: prepare_tokenizer); later opens read only the index
and map the file.
"""

from __future__ import annotations

import json
import logging
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from assistant.errors import ModelNotFound
from assistant.files import write_atomic
from backends.scratch import kernels
from backends.scratch.config import ModelConfig
from backends.scratch.model import DecoderLanguageModel

log = logging.getLogger(__name__)

INDEX = "gguf_index.json"
INDEX_VERSION = 1
ARCHITECTURES = ("llama", "mistral", "qwen2")
# GGML type id -> (name, values per block, bytes per block)
TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
         6: ("Q5_0", 32, 22), 8: ("Q8_0", 32, 34), 12: ("Q4_K", 256, 144), 14: ("Q6_K", 256, 210)}
FLOAT_TYPES = (0, 1, 30)


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the file: type, shape as (rows, row length), byte offset and size."""

    type: int
    rows: int
    cols: int
    offset: int
    nbytes: int


def _field(fields, key: str, default=None):
    field = fields.get(key)
    return default if field is None else field.contents()


def read_index(path: Path) -> dict:
    """The file's model configuration and tensor table, read with the gguf package."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # gguf raises ValueError, struct.error, ... on a damaged or foreign file
        raise ModelNotFound(f"cannot read the GGUF file {path}: {exc}") from exc
    fields = reader.fields
    arch = str(_field(fields, "general.architecture", ""))
    if arch not in ARCHITECTURES:
        raise ModelNotFound(f"{path.name} holds a {arch or 'unnamed'!r} model; the scratch engine runs GGUF files "
                            f"of the {', '.join(ARCHITECTURES)} families")
    scaling = _field(fields, f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ModelNotFound(f"{path.name} uses rope scaling {scaling!r}, which the scratch engine does not run")
    tensors = {}
    for t in reader.tensors:
        shape = [int(n) for n in t.shape]  # GGUF lists the row length first
        tensors[t.name] = {"type": int(t.tensor_type), "rows": int(np.prod(shape[1:])) if len(shape) > 1 else 1,
                           "cols": shape[0], "offset": int(t.data_offset), "nbytes": int(t.n_bytes)}
    embd = tensors.get("token_embd.weight")
    if embd is None:
        raise ModelNotFound(f"{path.name} has no token_embd.weight tensor")
    heads = int(_field(fields, f"{arch}.attention.head_count"))
    emb_dim = int(_field(fields, f"{arch}.embedding_length"))
    config = {
        "vocab_size": embd["rows"], "emb_dim": emb_dim, "num_heads": heads,
        "num_kv_heads": int(_field(fields, f"{arch}.attention.head_count_kv", heads)),
        "num_blocks": int(_field(fields, f"{arch}.block_count")), "mlp": "swiglu",
        "mlp_hidden": int(_field(fields, f"{arch}.feed_forward_length")), "mlp_bias": False,
        "attn_bias": "blk.0.attn_q.bias" in tensors,
        "rope_theta": float(_field(fields, f"{arch}.rope.freq_base", 10000.0)),
        # llama.cpp's converter reorders llama Q/K rows so that rotary pairs are adjacent
        # (interleaved); qwen2 keeps Hugging Face's halves
        "rope_pairing": "half" if arch == "qwen2" else "interleaved",
        "norm_eps": float(_field(fields, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "tie_embeddings": "output.weight" not in tensors, "final_norm": True,
        "context_length": int(_field(fields, f"{arch}.context_length", 2048)),
        "head_dim": int(_field(fields, f"{arch}.attention.key_length", emb_dim // heads)),
    }
    return {"version": INDEX_VERSION, "architecture": arch, "size": path.stat().st_size, "config": config,
            "tensors": tensors}


def load_index(path: Path, folder: Path) -> dict:
    """The index kept in `folder` (written on the first open of this file)."""
    index_path = folder / INDEX
    try:
        index = json.loads(index_path.read_text())
        if index.get("version") == INDEX_VERSION and index.get("size") == path.stat().st_size:
            return index
    except (OSError, json.JSONDecodeError):
        pass
    index = read_index(path)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(index_path, json.dumps(index))
    return index


class GGUFFile:
    """A GGUF file mapped read-only, with its tensor table."""

    def __init__(self, path: Path, index: dict):
        self.path = Path(path)
        self.config = ModelConfig(**index["config"])
        self.architecture = index["architecture"]
        self.tensors = {name: TensorEntry(**entry) for name, entry in index["tensors"].items()}
        size = self.path.stat().st_size
        for name, t in self.tensors.items():
            if t.type not in TYPES:
                raise ModelNotFound(f"{self.path.name}: tensor {name} has GGML type {t.type}, which the scratch engine "
                                    f"does not run (it runs {', '.join(n for n, _, _ in TYPES.values())}); "
                                    "try --backend hf")
            _, values, block_bytes = TYPES[t.type]
            if t.cols % values or t.nbytes != t.rows * t.cols // values * block_bytes:
                raise ModelNotFound(f"{self.path.name}: tensor {name} has a size its type does not allow")
            if t.offset + t.nbytes > size:
                raise ModelNotFound(f"{self.path.name} is truncated: tensor {name} ends past the end of the file "
                                    f"({t.offset + t.nbytes} > {size} bytes); download it again")
        with open(self.path, "rb") as f:
            # private (copy-on-write) mapping: writable views for torch without copying; nothing writes
            self._map = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)

    def has(self, name: str) -> bool:
        return name in self.tensors

    def raw(self, name: str) -> torch.Tensor:
        """A tensor's bytes as they are in the file, (rows, bytes per row) uint8, not copied."""
        t = self.tensors[name]
        return torch.from_numpy(self._bytes[t.offset : t.offset + t.nbytes].reshape(t.rows, -1))

    def floats(self, name: str) -> torch.Tensor:
        """A small float tensor (norm scales, biases) as float32, copied; 1-D when it has one row."""
        t = self.tensors[name]
        raw = self.raw(name)
        if t.type == 0:
            values = raw.view(torch.float32)
        elif t.type == 1:
            values = raw.view(torch.float16).float()
        elif t.type == 30:
            values = raw.view(torch.bfloat16).float()
        else:
            values = torch.from_numpy(self.dequantized(name))
        values = values.reshape(t.rows, t.cols).clone()
        return values[0] if t.rows == 1 else values

    def dequantized(self, name: str) -> np.ndarray:
        """A tensor as float32 (the reference path: tests and the fp32 model)."""
        from gguf.quants import dequantize

        t = self.tensors[name]
        from gguf import GGMLQuantizationType

        return dequantize(self._bytes[t.offset : t.offset + t.nbytes].reshape(t.rows, -1),
                          GGMLQuantizationType(t.type)).reshape(t.rows, t.cols).astype(np.float32)


def _compiled():
    module = kernels.load()
    if module is None:
        raise ModelNotFound(f"running a GGUF file on the scratch engine needs Hearth's CPU kernels, which could not be "
                            f"built here ({kernels.why_not()}); use --backend hf")
    return module


def _part(gguf: GGUFFile, name: str):
    t = gguf.tensors[name]
    module = _compiled()
    if t.type in FLOAT_TYPES:
        return module.Part.dense(gguf.floats(name).reshape(t.rows, t.cols))
    return module.Part.ggml(t.type, gguf.raw(name), t.cols)


class GGUFLinear(nn.Module):
    """y = x W^T (+ b) with W one or more GGUF tensors side by side (Q, K, V; gate, up), in their own
    block types. float32 in and out."""

    def __init__(self, gguf: GGUFFile, names: list[str], bias: torch.Tensor | None = None):
        super().__init__()
        self.names = names
        self.native = _compiled().Linear([_part(gguf, n) for n in names], bias)
        self.in_features, self.out_features = self.native.K, self.native.N
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.native.apply(x.reshape(-1, self.in_features).float())
        return y.view(*x.shape[:-1], self.out_features)


class GGUFEmbedding(nn.Module):
    """Token embeddings looked up (and decoded) row by row from the file's table."""

    def __init__(self, gguf: GGUFFile, name: str):
        super().__init__()
        t = gguf.tensors[name]
        self.type, self.dim = t.type, t.cols
        self.table = gguf.floats(name) if t.type in FLOAT_TYPES else gguf.raw(name)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.type in FLOAT_TYPES:
            return self.table[ids]
        flat = ids.reshape(-1).cpu()
        return _compiled().ggml_rows(self.type, self.table, self.dim, flat).view(*ids.shape, self.dim)


def open_gguf(path: Path, folder: Path) -> GGUFFile:
    """The file mapped, with the index kept in `folder`."""
    return GGUFFile(path, load_index(path, folder))


def load_native_model(gguf: GGUFFile) -> DecoderLanguageModel:
    """A DecoderLanguageModel whose layers multiply the mapped file's own blocks."""
    config = gguf.config
    with torch.device("meta"):
        model = DecoderLanguageModel(config)
    names = gguf.tensors
    required = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{p}.weight" for i in range(config.num_blocks)
        for p in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
    missing = [n for n in required if n not in names]
    if missing:
        raise ModelNotFound(f"{gguf.path.name} is missing tensors {missing[:4]}; is it a complete model?")
    for i, block in enumerate(model.blocks):
        p = f"blk.{i}."
        bias = torch.cat([gguf.floats(f"{p}attn_{x}.bias") for x in "qkv"]) if config.attn_bias else None
        attention, mlp = block.attention, block.mlp
        del attention.W_Q, attention.W_K, attention.W_V, mlp.W_1, mlp.W_3
        attention.W_QKV = GGUFLinear(gguf, [f"{p}attn_q.weight", f"{p}attn_k.weight", f"{p}attn_v.weight"], bias)
        attention.W_O = GGUFLinear(gguf, [f"{p}attn_output.weight"])
        mlp.W_13 = GGUFLinear(gguf, [f"{p}ffn_gate.weight", f"{p}ffn_up.weight"])
        mlp.W_2 = GGUFLinear(gguf, [f"{p}ffn_down.weight"])
        block.norm1.scale = nn.Parameter(gguf.floats(f"{p}attn_norm.weight"), requires_grad=False)
        block.norm2.scale = nn.Parameter(gguf.floats(f"{p}ffn_norm.weight"), requires_grad=False)
    model.final_norm.scale = nn.Parameter(gguf.floats("output_norm.weight"), requires_grad=False)
    model.embedding = GGUFEmbedding(gguf, "token_embd.weight")
    model.output = GGUFLinear(gguf, ["token_embd.weight" if config.tie_embeddings else "output.weight"])
    model.rope_cos, model.rope_sin = torch.empty(0), torch.empty(0)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise ModelNotFound(f"{gguf.path.name}: no weights for {left[:4]}")
    model.gguf = gguf  # keeps the mapping alive as long as the model
    return model.eval()


def load_dequantized_model(gguf: GGUFFile) -> DecoderLanguageModel:
    """The same model with every weight dequantised to float32 (the reference the kernels are measured
    against: `hearth bench decode`; several times the file's size in memory)."""
    from backends.scratch.weights import _build

    config = gguf.config
    state = {"embedding.weight": gguf.floats("token_embd.weight"), "final_norm.scale": gguf.floats("output_norm.weight")}
    if not config.tie_embeddings:
        state["output.weight"] = gguf.floats("output.weight")
    ours = {"attn_q": "attention.W_Q", "attn_k": "attention.W_K", "attn_v": "attention.W_V",
            "attn_output": "attention.W_O", "ffn_gate": "mlp.W_1", "ffn_up": "mlp.W_3", "ffn_down": "mlp.W_2"}
    for i in range(config.num_blocks):
        state[f"blocks.{i}.norm1.scale"] = gguf.floats(f"blk.{i}.attn_norm.weight")
        state[f"blocks.{i}.norm2.scale"] = gguf.floats(f"blk.{i}.ffn_norm.weight")
        for theirs, name in ours.items():
            state[f"blocks.{i}.{name}.weight"] = gguf.floats(f"blk.{i}.{theirs}.weight")
            if config.attn_bias and theirs in ("attn_q", "attn_k", "attn_v"):
                state[f"blocks.{i}.{name}.bias"] = gguf.floats(f"blk.{i}.{theirs}.bias")
    return _build(config, state)
