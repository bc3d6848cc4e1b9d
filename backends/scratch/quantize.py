"""Quantizing a loaded model for the scratch engine's CPU paths: weight-only int8 (this part) and
q8/q4 blocks (quantize_blocks at the end: blockquant.py's layers, loaded from a GGUF file's own
blocks where the file has them).

Each linear layer keeps its weight as int8 with one scale per output row (symmetric, absmax / 127)
and multiplies bf16 activations by it in one fused kernel that dequantizes on the fly. Only the
weights are quantized: activations stay bf16, because dynamically quantizing activations to int8
(torch.ao's quantize_dynamic) breaks on the outlier channels small Llama models have (SmolLM2's
MLP down-projections), which turned greedy answers into repeated garbage.

The MLP down-projections (W_2), which read those outlier channels, stay bf16. Measured on SmolLM2
over three 600-token texts on a 2-core AVX2 CPU: mean KL divergence from fp32 0.0061 -> 0.0048 and
next-token agreement 0.950 -> 0.955 (bf16 everywhere: 0.97), at no measurable decode cost (18.8 vs
18.9 tok/s interleaved). Keeping any other layer type instead helped less (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows (decode steps, short verifies) the fused int8 kernel wins; it computes
# every row separately, so long prefills go through a dequantized bf16 matmul instead.
FUSED_MAX_ROWS = 48  # measured crossover for SmolLM2-135M on a 2-core CPU


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8 rows times a per-row scale."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("weight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype))
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def dequantized(self) -> torch.Tensor:
        """The weight this layer multiplies by, in fp32 (for tests and inspection)."""
        return self.weight.float() * self.scale.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(self.scale.dtype)
        if flat.shape[0] <= FUSED_MAX_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scale)
        else:  # a prefill: dequantizing once and running a bf16 GEMM is several times faster
            y = F.linear(flat, self.weight.to(flat.dtype) * self.scale[:, None])
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


KEEP_BF16 = ("W_2",)  # layer names left in bf16 (see above)


def quantize_int8(model: nn.Module) -> nn.Module:
    """In place: bf16 everywhere, every nn.Linear but KEEP_BF16 replaced by an Int8Linear (CPU only).

    A tied output projection gets its own int8 copy; the embedding table stays bf16 (a lookup
    reads one row, so quantizing it would save memory but no time).
    """
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 precision runs on the CPU; use bf16 on a GPU")
    model.to(torch.bfloat16)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and name not in KEEP_BF16:
                setattr(module, name, Int8Linear(child))
    return model


# ---- q8 / q4: block-quantized weights through Hearth's own kernels (blockquant.py) ----

_GGUF_NAMES = {"W_Q": "attn_q", "W_K": "attn_k", "W_V": "attn_v", "W_O": "attn_output",
               "W_1": "ffn_gate", "W_3": "ffn_up", "W_2": "ffn_down"}
_FUSED = {"W_QKV": ("W_Q", "W_K", "W_V"), "W_13": ("W_1", "W_3")}


def _gguf_row_order(rows: int, heads: int) -> torch.Tensor:
    """llama.cpp's converter interleaves each Q/K head's two rotary halves; this index undoes it."""
    return torch.arange(rows).view(heads, -1, 2).transpose(1, 2).reshape(-1)


def _gguf_blocks(path: Path, config) -> dict[str, tuple[str, tuple[torch.Tensor, ...]]]:
    """Block tensors of a GGUF file the kernels take as they are, by our layer name
    ("blocks.3.W_Q", "output"), with Q/K rows in Hugging Face order."""
    from gguf import GGUFReader

    from backends.scratch.blockquant import from_gguf_rows

    names = {f"blk.{i}.{g}.weight": f"blocks.{i}.{ours}" for i in range(config.num_blocks)
             for ours, g in _GGUF_NAMES.items()}
    names["token_embd.weight"] = "embedding"
    names["output.weight"] = "output"
    found = {}
    for tensor in GGUFReader(str(path)).tensors:
        ours = names.get(tensor.name)
        blocks = from_gguf_rows(tensor.tensor_type.name, tensor.data) if ours else None
        if blocks is None:
            continue
        kind, parts = blocks
        layer = ours.rsplit(".", 1)[-1]
        if layer in ("W_Q", "W_K"):
            heads = config.num_heads if layer == "W_Q" else config.num_kv_heads
            order = _gguf_row_order(parts[0].shape[0], heads)
            parts = tuple(p[order].contiguous() for p in parts)
        found[ours] = kind, parts
    if "output" not in found and config.tie_embeddings and "embedding" in found:
        found["output"] = found["embedding"]
    return found


def quantize_blocks(model: nn.Module, kind: str, gguf: Path | None = None) -> tuple[nn.Module, int]:
    """In place: every linear layer becomes a BlockQuantLinear of `kind` (q8 or q4; the output
    projection q8 either way, as llama.cpp's Q4 files keep it), float32 elsewhere.

    With `gguf` (the file the model folder was converted from), layers whose blocks the file holds
    in a type the kernels take, and whose weights are exactly those blocks, are loaded as they are
    rather than quantized again from floats. A q4 layer whose weights differ from the file's 4-bit
    blocks (a merged LoRA adapter changed them) becomes q8 instead: rounding base + adapter to 4 bits again
    would add a second 4-bit error the adapter was never trained with (measured: the merged
    grounded-answer adapter re-rounded to q4 stopped refusing and citing; at q8 its greedy answers
    were fp32's). Returns the model and how many layers came from the file's blocks.
    """
    from backends.scratch.blockquant import BlockQuantLinear

    if next(model.parameters()).device.type != "cpu":
        raise ValueError(f"{kind} precision runs on the CPU; use bf16 on a GPU")
    model.float()
    config = model.config
    from_file = _gguf_blocks(gguf, config) if gguf is not None else {}
    used = 0

    def replacement(name: str, linear: nn.Linear, layer_kind: str) -> BlockQuantLinear:
        nonlocal used
        parts_names = [f"{name.rsplit('.', 1)[0]}.{p}" for p in _FUSED.get(name.rsplit(".", 1)[-1], ())] or [name]
        loaded = [from_file.get(p) for p in parts_names]
        if linear.bias is None and all(loaded) and {k for k, _ in loaded} == {layer_kind}:
            tensors = tuple(torch.cat(group) for group in zip(*(parts for _, parts in loaded)))
            layer = BlockQuantLinear(loaded[0][0], tensors, linear.in_features)
            if torch.equal(layer.dequantized(), linear.weight.detach()):
                used += len(loaded)
                return layer
            if layer_kind == "q4":
                layer_kind = "q8"  # the file's 4-bit blocks, changed since: see the docstring
        return BlockQuantLinear.from_linear(linear, layer_kind)

    for i, block in enumerate(model.blocks):
        for module in (block.attention, block.mlp):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(module, child_name, replacement(f"blocks.{i}.{child_name}", child, kind))
    model.output = replacement("output", model.output, "q8")
    return model, used
