"""Block-quantized linear layers (q8, q4) for the scratch engine's CPU decode steps.

Weights are split into blocks of 32 values along each row, as GGUF's Q8_0 and Q4_1 are: q8 keeps
int8 values and one fp16 scale per block, q4 keeps 4-bit values with an fp16 scale and minimum per
block (w = d * q + m). A product quantizes the activations per block of 32 to int8 too, so each
block's dot product is an integer sum; Hearth's kernels (kernels/qmatmul.cpp) compute them with
the CPU's vector units. The functions here are the same math in plain PyTorch: the kernels' test
reference, and the path taken when the kernels cannot be built.

A row whose length is not a multiple of 32 is padded with zeros (weights and activations alike).
Prefills of many rows go through a dequantized fp32 matmul instead, which is faster there.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backends.scratch import kernels

QK = 32  # values per block
KERNEL_MAX_ROWS = 16  # up to this many rows (decode steps, speculative verifies) the kernels win


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    """(N, K) float -> (N, nb, 32) float32, zero padded."""
    weight = weight.detach().float()
    pad = -weight.shape[1] % QK
    return F.pad(weight, (0, pad)).view(weight.shape[0], -1, QK)


def quantize_q8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values (N, nb*32), fp16 scales (N, nb)), rounded as llama.cpp's Q8_0."""
    blocks = _blocks(weight)
    d = blocks.abs().amax(-1) / 127
    inverse = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    q = torch.round(blocks * inverse[..., None]).clamp(-127, 127).to(torch.int8)
    return q.view(weight.shape[0], -1), d.half()


def quantize_q4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed nibbles (N, nb*16) uint8, fp16 scales, fp16 minimums), rounded as llama.cpp's Q4_1:
    nibble i of a block's byte j: element j (low) and j + 16 (high)."""
    blocks = _blocks(weight)
    low, high = blocks.amin(-1), blocks.amax(-1)
    d = (high - low) / 15
    inverse = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    q = torch.clamp(((blocks - low[..., None]) * inverse[..., None] + 0.5).floor(), 0, 15).to(torch.uint8)
    packed = q[..., : QK // 2] | (q[..., QK // 2 :] << 4)
    return packed.reshape(weight.shape[0], -1).contiguous(), d.half(), low.half()


def unpack_q4(packed: torch.Tensor) -> torch.Tensor:
    """(N, nb*16) nibble pairs -> (N, nb, 32) values 0..15."""
    blocks = packed.view(packed.shape[0], -1, QK // 2)
    return torch.cat([blocks & 0x0F, blocks >> 4], dim=-1)


def quantize_activations(x: torch.Tensor, nb: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, K) float32 -> (int8 values (M, nb*32), scales (M, nb), scale * sum of values (M, nb)),
    with the kernels' exact arithmetic: d = amax / 127, q = round(x * (1 / d)), ties to even."""
    blocks = F.pad(x.float(), (0, nb * QK - x.shape[1])).view(x.shape[0], nb, QK)
    d = blocks.abs().amax(-1) / 127
    inverse = torch.where(d != 0, 1 / d, torch.zeros_like(d))
    q = torch.round(blocks * inverse[..., None])
    return q.to(torch.int8).view(x.shape[0], -1), d, d * q.sum(-1)


def _block_sums(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """Integer dot products per block, (M, N, nb); exact in float32 (|sum| <= 32 * 255 * 128 < 2^24)."""
    m, n, nb = xq.shape[0], wq.shape[0], wq.shape[1]
    return torch.einsum("mbk,nbk->mnb", xq.view(m, nb, QK).float(), wq.float())


def q8_matmul_reference(x: torch.Tensor, w: torch.Tensor, wd: torch.Tensor) -> torch.Tensor:
    """x (M, K) @ W^T for a q8 weight, in PyTorch."""
    nb = wd.shape[1]
    xq, dx, _ = quantize_activations(x, nb)
    sums = _block_sums(xq, w.view(w.shape[0], nb, QK))
    return (sums * (wd.float()[None] * dx[:, None, :])).sum(-1)


def q4_matmul_reference(x: torch.Tensor, w: torch.Tensor, wd: torch.Tensor, wm: torch.Tensor) -> torch.Tensor:
    """x (M, K) @ W^T for a q4 weight, in PyTorch."""
    nb = wd.shape[1]
    xq, dx, sx = quantize_activations(x, nb)
    sums = _block_sums(xq, unpack_q4(w))
    return (sums * (wd.float()[None] * dx[:, None, :])).sum(-1) + sx @ wm.float().T


class BlockQuantLinear(nn.Module):
    """y = x W^T + b with W in q8 or q4 blocks; float32 in and out."""

    def __init__(self, kind: str, tensors: tuple[torch.Tensor, ...], in_features: int,
                 bias: torch.Tensor | None = None):
        super().__init__()
        if kind not in ("q8", "q4"):
            raise ValueError(f"unknown block quantization {kind!r}")
        self.kind, self.in_features, self.out_features = kind, in_features, tensors[0].shape[0]
        self.register_buffer("qweight", tensors[0].contiguous())
        self.register_buffer("scale", tensors[1].contiguous())
        self.register_buffer("minimum", tensors[2].contiguous() if kind == "q4" else None)
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    @classmethod
    def from_linear(cls, linear: nn.Linear, kind: str) -> "BlockQuantLinear":
        quantize = quantize_q8 if kind == "q8" else quantize_q4
        return cls(kind, quantize(linear.weight), linear.in_features, linear.bias)

    def dequantized(self) -> torch.Tensor:
        """The weight this layer multiplies by, (N, K) float32."""
        n = self.out_features
        if self.kind == "q8":
            w = self.qweight.view(n, -1, QK).float() * self.scale.float()[..., None]
        else:
            w = unpack_q4(self.qweight).float() * self.scale.float()[..., None] + self.minimum.float()[..., None]
        return w.reshape(n, -1)[:, : self.in_features]

    def product(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """(M, K) float32 rows times W^T (+ bias) (+ residual), through the kernels when built."""
        compiled = kernels.load()
        if compiled is None:
            y = (q8_matmul_reference(x, self.qweight, self.scale) if self.kind == "q8"
                 else q4_matmul_reference(x, self.qweight, self.scale, self.minimum))
            y = y if residual is None else y + residual
        elif self.kind == "q8":
            y = compiled.q8_matmul(x, self.qweight, self.scale, residual=residual)
        else:
            y = compiled.q4_matmul(x, self.qweight, self.scale, self.minimum, residual=residual)
        return y if self.bias is None else y + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        if flat.shape[0] > KERNEL_MAX_ROWS:  # a prefill: one fp32 GEMM over the dequantized weight
            y = torch.addmm(self.bias, flat, self.dequantized().T) if self.bias is not None else flat @ self.dequantized().T
        else:
            y = self.product(flat)
        return y.view(*x.shape[:-1], self.out_features)


# ---- GGUF blocks, loaded as they are ----

_GGUF_KINDS = {"Q8_0": ("q8", 34), "Q4_1": ("q4", 20), "Q4_0": ("q4", 18)}


def from_gguf_rows(type_name: str, rows: np.ndarray) -> tuple[str, tuple[torch.Tensor, ...]] | None:
    """A GGUF tensor's raw blocks (rows, bytes per row) as this module's (kind, tensors), without
    dequantizing; None for a block type the kernels do not take. Q4_0 (w = d * (q - 8)) becomes q4
    with minimum -8d, which is exact in fp16."""
    if type_name not in _GGUF_KINDS:
        return None
    kind, size = _GGUF_KINDS[type_name]
    raw = torch.from_numpy(np.array(rows, copy=True)).view(rows.shape[0], -1, size)
    d = raw[..., :2].contiguous().view(torch.float16)[..., 0]
    if type_name == "Q8_0":
        return kind, (raw[..., 2:].contiguous().view(torch.int8).reshape(rows.shape[0], -1), d.contiguous())
    if type_name == "Q4_1":
        m = raw[..., 2:4].contiguous().view(torch.float16)[..., 0]
        return kind, (raw[..., 4:].reshape(rows.shape[0], -1).contiguous(), d.contiguous(), m.contiguous())
    return kind, (raw[..., 2:].reshape(rows.shape[0], -1).contiguous(), d.contiguous(), (d * -8).contiguous())
