"""The decoder Transformer of The Hundred-Page Language Models Book, Llama-compatible.

Pre-norm blocks: x + MultiHeadAttention(RMSNorm(x)), then x + MLP(RMSNorm(x)). All heads are
computed in one batched matmul. The optional `cache` argument lets the inference engine
(engine.py) keep keys and values between calls; training never passes one.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from backends.scratch.config import ModelConfig



class KVCache(Protocol):
    """What attention needs from a layer's key/value cache (the engine implements it)."""

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys and values (batch, kv_heads, new, head_dim); return all cached so far."""
        ...


def rope_angles(head_dim: int, positions: torch.Tensor, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles t * theta^(-2i/d), shape (len(positions), head_dim/2)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pairing: str = "interleaved") -> torch.Tensor:
    """Rotate pairs of features of x (..., T, d) by position-dependent angles.

    "interleaved" pairs (x0, x1), (x2, x3), ... as in the book; "half" pairs (x_i, x_{i+d/2}) as
    in Llama's rotate_half. cos and sin have shape (T, d/2).
    """
    if pairing == "interleaved":
        x1, x2 = x[..., 0::2], x[..., 1::2]
        r1, r2 = x1 * cos - x2 * sin, x1 * sin + x2 * cos
        return torch.stack((r1, r2), dim=-1).flatten(-2).to(x.dtype)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * scale."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.scale.shape, self.scale, self.eps)  # one fused kernel


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The book's AttentionHead math for all heads at once: softmax(Q K^T / sqrt(d_h) + mask) V.

    q: (B, H, T, d); k, v: (B, KV, S, d) with H a multiple of KV (grouped-query attention: each
    group of H/KV query heads shares one key/value head). mask: (T, S) additive, or None.
    PyTorch's fused kernel computes exactly this formula, without materialising repeated K/V.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])


def causal_mask(t: int, start: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask for T new queries at positions start.. over start + T keys."""
    q_pos = torch.arange(start, start + t, device=device)[:, None]
    k_pos = torch.arange(start + t, device=device)[None, :]
    return torch.zeros(t, start + t, device=device, dtype=dtype).masked_fill(k_pos > q_pos, float("-inf"))


class Linear(nn.Linear):
    """nn.Linear that can multiply a few rows at once as W x^T instead of x W^T.

    Both compute the same sums; they run different BLAS kernels. For the few-row products of
    batched decoding the x W^T kernel can be several times slower (MKL on an AMD EPYC: SmolLM2's
    49152x576 output projection, 8 rows, 49.8 ms vs 13.8 ms). `columns_up_to` (rows) is set by
    the engine that measured which is faster on the machine (batch.py); 0 keeps nn.Linear's way.
    """

    columns_up_to = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if 1 < rows <= self.columns_up_to:
            y = torch.mm(self.weight, x.reshape(rows, self.in_features).t()).t()
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias)


def _concat_linears(parts: list[nn.Linear]) -> nn.Linear:
    """One Linear whose output is the outputs of `parts` side by side."""
    first = parts[0]
    fused = Linear(first.in_features, sum(p.out_features for p in parts), bias=first.bias is not None,
                      device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        if first.bias is not None:
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
    return fused


class MultiHeadAttention(nn.Module):
    """Heads concatenated, then W_O. W_Q/W_K/W_V project to all heads at once."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.pairing = config.rope_pairing
        d = config.emb_dim
        self.W_Q = Linear(d, self.num_heads * self.head_dim, bias=config.attn_bias)
        self.W_K = Linear(d, self.num_kv_heads * self.head_dim, bias=config.attn_bias)
        self.W_V = Linear(d, self.num_kv_heads * self.head_dim, bias=config.attn_bias)
        self.W_O = Linear(self.num_heads * self.head_dim, d, bias=False)
        self.W_QKV: nn.Linear | None = None

    def fuse(self) -> None:
        """Inference only: replace W_Q, W_K, W_V by one W_QKV (one matmul instead of three)."""
        parts = [self.W_Q, self.W_K, self.W_V]
        self.W_QKV = _concat_linears(parts)
        del self.W_Q, self.W_K, self.W_V

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, cache: "KVCache | None" = None, row_by_row: bool = False) -> torch.Tensor:
        """row_by_row: attend each of the T new positions as a one-token decode step would (no mask,
        the cache up to that position), so that speculative verification reproduces single steps
        exactly; `mask` is then unused."""
        b, t, _ = x.shape
        h, kv = self.num_heads, self.num_kv_heads
        if self.W_QKV is not None:
            qkv = self.W_QKV(x)
        else:
            qkv = torch.cat([self.W_Q(x), self.W_K(x), self.W_V(x)], dim=-1)
        qkv = qkv.view(b, t, h + 2 * kv, self.head_dim)
        # Q and K heads sit side by side: rotate them in one call. V is never rotated.
        # cos/sin: (T, d/2), or (B, T, d/2) when each row has its own positions (batched engine)
        qk = rope(qkv[:, :, : h + kv], cos[..., None, :], sin[..., None, :], self.pairing)
        q = qk[:, :, :h].transpose(1, 2)
        k = qk[:, :, h:].transpose(1, 2)
        v = qkv[:, :, h + kv :].transpose(1, 2)
        if cache is not None:
            k, v = cache.append(k, v)  # new keys stored rotated; cached keys are not touched
        if row_by_row:
            past = k.shape[2] - t
            out = torch.cat([attention(q[:, :, i : i + 1], k[:, :, : past + i + 1], v[:, :, : past + i + 1], None)
                             for i in range(t)], dim=2)
        else:
            out = attention(q, k, v, mask)
        return self.W_O(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """relu: W_2(relu(W_1 x)); swiglu: W_2(silu(W_1 x) * W_3 x)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind = config.mlp
        self.W_1 = Linear(config.emb_dim, config.mlp_hidden, bias=config.mlp_bias)
        self.W_2 = Linear(config.mlp_hidden, config.emb_dim, bias=config.mlp_bias)
        if self.kind == "swiglu":
            self.W_3 = Linear(config.emb_dim, config.mlp_hidden, bias=config.mlp_bias)
        self.W_13: nn.Linear | None = None

    def fuse(self) -> None:
        """Inference only: replace W_1 and W_3 of a gated MLP by one W_13."""
        if self.kind == "swiglu":
            self.W_13 = _concat_linears([self.W_1, self.W_3])
            del self.W_1, self.W_3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.W_13 is not None:
            gate, up = self.W_13(x).chunk(2, dim=-1)
            return self.W_2(F.silu(gate) * up)
        if self.kind == "swiglu":
            return self.W_2(F.silu(self.W_1(x)) * self.W_3(x))
        return self.W_2(F.relu(self.W_1(x)))


class DecoderBlock(nn.Module):
    """RMSNorm -> attention -> residual -> RMSNorm -> MLP -> residual."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm1 = RMSNorm(config.emb_dim, config.norm_eps)
        self.attention = MultiHeadAttention(config)
        self.norm2 = RMSNorm(config.emb_dim, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, cache=None, row_by_row=False):
        x = x + self.attention(self.norm1(x), cos, sin, mask, cache, row_by_row)
        return x + self.mlp(self.norm2(x))


class DecoderLanguageModel(nn.Module):
    """Embedding -> decoder blocks -> (final RMSNorm) -> output projection to vocabulary logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.emb_dim)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.num_blocks))
        self.final_norm = RMSNorm(config.emb_dim, config.norm_eps) if config.final_norm else None
        self.output = Linear(config.emb_dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.embedding.weight
        self.apply(self._init_weights)
        self._rope_len = 0
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2 style: N(0, 0.02) weights, zero biases (PyTorch's defaults make tied logits huge)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype activations and KV caches take (the norms', whatever form the linear layers have)."""
        return self.blocks[0].norm1.scale.dtype

    def rope_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions 0..length-1, computed once and grown on demand."""
        if length > self._rope_len:
            size = max(length, self.config.context_length)
            cos, sin = rope_angles(self.config.head_dim, torch.arange(size), self.config.rope_theta)
            device = self.blocks[0].norm1.scale.device
            self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)
            self._rope_len = size
        return self.rope_cos, self.rope_sin

    def forward(self, ids: torch.Tensor, start: int = 0, caches: "list[KVCache] | None" = None,
                logits_at: torch.Tensor | None = None, row_by_row: bool = False) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids (B, T) at positions start..start+T-1 (see forward_at
        for `logits_at`, MultiHeadAttention for `row_by_row`)."""
        t = ids.shape[1]
        cos, sin = self.rope_tables(start + t)
        cos, sin = cos[start : start + t], sin[start : start + t]
        mask = causal_mask(t, start, ids.device, self.dtype) if t > 1 else None
        return self.forward_at(ids, cos, sin, mask, caches, logits_at, row_by_row)

    def forward_at(self, ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                   caches: "list[KVCache] | None" = None, logits_at: torch.Tensor | None = None,
                   row_by_row: bool = False) -> torch.Tensor:
        """Logits for token ids whose rotation angles (cos, sin) and attention mask are given.
        `logits_at` (B,): only the logits at that position of each row, (B, vocab) (a prefill needs
        one position, and the output projection over all of them is a fifth of its work)."""
        x = self.embedding(ids)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, caches[i] if caches is not None else None, row_by_row)
        if logits_at is not None:
            x = x[torch.arange(x.shape[0], device=x.device), logits_at]
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.output(x)

    def fuse_for_inference(self) -> "DecoderLanguageModel":
        """Fuse Q/K/V and gate/up projections (fewer, larger matmuls). Not for training or LoRA."""
        for block in self.blocks:
            block.attention.fuse()
            block.mlp.fuse()
        return self

    def num_parameters(self) -> int:
        """Distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())
