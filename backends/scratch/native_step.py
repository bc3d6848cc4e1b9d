"""Decode steps of a q8/q4 or GGUF-native model in one native call (kernels/ggml.cpp: Decoder).

The model's own forward (model.py) runs ~25 PyTorch operations per block, each costing several
microseconds of dispatch for a one-token step: for SmolLM2's 30 blocks that was more than the
matrix products' own time. The native Decoder holds the same weights and the engine's KV caches
and runs a step's blocks, final norm and output projection in C++: per block one product per
weight (the residual add fused into it, a bias after it), RMSNorm, SwiGLU, and one function that
rotates Q/K, writes the KV cache and attends. q8/q4 prefills of more than a few tokens still go
through the model's forward; a GGUF-native model prefills through the Decoder too (its products
decode each weight row once for all the prompt's rows).

Every part computes each row on its own, so a speculative verify of k rows gives each row the
logits a one-row step gives it, bit for bit (speculation.py relies on it).
"""

from __future__ import annotations

import torch

from backends.scratch import kernels
from backends.scratch.blockquant import BlockQuantLinear
from backends.scratch.gguf_native import GGUFLinear
from backends.scratch.model import DecoderLanguageModel


def _layers(model: DecoderLanguageModel) -> list:
    return [layer for b in model.blocks for layer in (b.attention.W_QKV, b.attention.W_O, b.mlp.W_13, b.mlp.W_2)] \
        + [model.output]


def _native(layer):
    """The kernels' Linear for a block-quantized or GGUF layer."""
    if isinstance(layer, GGUFLinear):
        return layer.native
    compiled = kernels.load()
    part = (compiled.Part.q8(layer.qweight, layer.scale, layer.in_features) if layer.kind == "q8" else
            compiled.Part.q4(layer.qweight, layer.scale, layer.minimum, layer.in_features))
    return compiled.Linear([part], layer.bias)


def supported(model: DecoderLanguageModel) -> bool:
    """Whether `model` is a fused SwiGLU model whose linear layers are all block-quantized (q8/q4) or the
    GGUF file's own tensors, and the kernels are built."""
    return all(isinstance(layer, (BlockQuantLinear, GGUFLinear)) for layer in _layers(model)) \
        and kernels.load() is not None


def gguf_native(model: DecoderLanguageModel) -> bool:
    """Whether the model's layers are a GGUF file's own tensors (gguf_native.py)."""
    return isinstance(model.output, GGUFLinear)


class NativeDecoder:
    """A model's decode steps over the engine's caches (LayerCache k/v tensors, shared, not copied)."""

    def __init__(self, model: DecoderLanguageModel, caches: list):
        config = model.config
        self.model = model
        self.caches = caches
        linears = [_native(layer) for layer in _layers(model)]
        norms = [n.scale.detach().float() for block in model.blocks for n in (block.norm1, block.norm2)]
        final = model.final_norm.scale.detach().float() if model.final_norm is not None else None
        self.native = kernels.load().Decoder(
            linears[:-1], norms, [c.k for c in caches], [c.v for c in caches], final, linears[-1],
            config.num_heads, config.num_kv_heads, config.rope_pairing == "interleaved", config.norm_eps)

    @torch.inference_mode()
    def forward(self, ids: list[int], start: int, last_only: bool = False) -> torch.Tensor:
        """Next-token logits (len(ids), vocab) for ids at positions start.., appended to the caches
        (`last_only`: the last position's alone, (1, vocab))."""
        rows = len(ids)
        x = self.model.embedding(torch.tensor(ids)).float()
        cos, sin = self.model.rope_tables(start + rows)
        logits = self.native.forward(x, start, cos[start : start + rows], sin[start : start + rows], last_only)
        for cache in self.caches:
            cache.length = start + rows
        return logits
