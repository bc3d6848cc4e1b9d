"""Decode steps of a q8/q4 model in one native call (kernels/qmatmul.cpp: Decoder).

The model's own forward (model.py) runs ~25 PyTorch operations per block, each costing several
microseconds of dispatch for a one-token step: for SmolLM2's 30 blocks that was more than the
matrix products' own time. The native Decoder holds the same weights and the engine's KV caches
and runs a step's blocks, final norm and output projection in C++: per block one product per
weight (the residual add fused into it), RMSNorm, SwiGLU, and one function that rotates Q/K,
writes the KV cache and attends. Prefills still go through the model's forward.

Every part computes each row on its own, so a speculative verify of k rows gives each row the
logits a one-row step gives it, bit for bit (speculation.py relies on it).
"""

from __future__ import annotations

import torch

from backends.scratch import kernels
from backends.scratch.blockquant import BlockQuantLinear
from backends.scratch.model import DecoderLanguageModel


def _weights(layer: BlockQuantLinear) -> list[torch.Tensor]:
    return [layer.qweight, layer.scale] + ([layer.minimum] if layer.kind == "q4" else [])


def supported(model: DecoderLanguageModel) -> bool:
    """Whether `model` is a fused, block-quantized, bias-free SwiGLU model and the kernels are built."""
    layers = [model.output] + [layer for b in model.blocks
                               for layer in (b.attention.W_QKV, b.attention.W_O, b.mlp.W_13, b.mlp.W_2)]
    return all(isinstance(layer, BlockQuantLinear) and layer.bias is None for layer in layers) \
        and kernels.load() is not None


class NativeDecoder:
    """A model's decode steps over the engine's caches (LayerCache k/v tensors, shared, not copied)."""

    def __init__(self, model: DecoderLanguageModel, caches: list):
        config = model.config
        self.model = model
        self.caches = caches
        linears, norms = [], []
        for block in model.blocks:
            linears += [_weights(block.attention.W_QKV), _weights(block.attention.W_O),
                        _weights(block.mlp.W_13), _weights(block.mlp.W_2)]
            norms += [block.norm1.scale.detach().float(), block.norm2.scale.detach().float()]
        final = model.final_norm.scale.detach().float() if model.final_norm is not None else None
        self.native = kernels.load().Decoder(
            linears, norms, [c.k for c in caches], [c.v for c in caches], final, _weights(model.output),
            config.num_heads, config.num_kv_heads, config.rope_pairing == "interleaved", config.norm_eps)

    @torch.inference_mode()
    def forward(self, ids: list[int], start: int) -> torch.Tensor:
        """Next-token logits (len(ids), vocab) for ids at positions start.., appended to the caches."""
        rows = len(ids)
        x = self.model.embedding.weight[ids].float()
        cos, sin = self.model.rope_tables(start + rows)
        logits = self.native.forward(x, start, cos[start : start + rows], sin[start : start + rows])
        for cache in self.caches:
            cache.length = start + rows
        return logits
