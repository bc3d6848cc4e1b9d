"""Weight-only int8 for the scratch engine's CPU fast path.

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
