"""GGUF's own block types in Hearth's kernels (kernels/ggml.cpp): dequantisation equals the gguf
package's reference on random valid blocks, and every product path (AVX-512 VNNI, AVX2, portable,
whichever this CPU has) equals the float product of the dequantised weight with the same quantised
activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from backends.scratch import kernels
from tests.helpers import random_blocks

BLOCK_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"]

compiled = kernels.load()
pytestmark = pytest.mark.skipif(compiled is None, reason=f"kernels not built: {kernels.why_not()}")


def _tensor(type_name: str, rows: int, cols: int, seed: int = 0):
    raw = random_blocks(type_name, rows, cols, np.random.default_rng(seed))
    reference = dequantize(raw, GGMLQuantizationType[type_name]).reshape(rows, cols).astype(np.float32)
    return torch.from_numpy(raw.copy()), reference


@pytest.mark.parametrize("type_name", BLOCK_TYPES)
def test_dequantisation_equals_the_gguf_reference(type_name):
    raw, reference = _tensor(type_name, 37, 512)
    ours = compiled.ggml_dequantize(int(GGMLQuantizationType[type_name]), raw, 512)
    np.testing.assert_array_equal(ours.numpy(), reference)
    rows = compiled.ggml_rows(int(GGMLQuantizationType[type_name]), raw, 512, torch.tensor([5, 0, 36, 5]))
    np.testing.assert_array_equal(rows.numpy(), reference[[5, 0, 36, 5]])


def _expected(x: torch.Tensor, weight: np.ndarray) -> torch.Tensor:
    """The product the kernels compute: activations rounded to int8 per block of 128 as they round them
    (d = amax / 127, q = round(x * (1 / d)), ties to even), times the dequantised weight, in float64."""
    width = -(-x.shape[1] // 128) * 128
    blocks = torch.nn.functional.pad(x, (0, width - x.shape[1])).view(x.shape[0], -1, 128)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    q = torch.round(blocks * torch.where(d > 0, 1 / d, torch.zeros_like(d)))
    rounded = (q.double() * d.double()).reshape(x.shape[0], -1)[:, : x.shape[1]]
    return rounded @ torch.from_numpy(weight).double().T


@pytest.mark.parametrize("type_name", BLOCK_TYPES)
@pytest.mark.parametrize("rows", [1, 3, 6, 33])
def test_every_kernel_path_equals_the_dequantised_product(type_name, rows):
    raw, weight = _tensor(type_name, 40, 768, seed=rows)
    x = torch.randn(rows, 768, generator=torch.Generator().manual_seed(rows))
    expected = _expected(x, weight)
    linear = compiled.Linear([compiled.Part.ggml(int(GGMLQuantizationType[type_name]), raw, 768)])
    for path in compiled.instruction_sets():
        got = linear.apply(x, path=path).double()
        scale = expected.abs().max()
        assert (got - expected).abs().max() <= 2e-5 * scale, (path, float((got - expected).abs().max() / scale))
        # and close to the plain float product (the activations' 8-bit rounding is all that differs)
        plain = x.double() @ torch.from_numpy(weight).double().T
        assert (got - plain).abs().max() <= 0.05 * plain.abs().max()


def test_parts_side_by_side_with_bias_and_residual_and_a_ragged_width():
    # Q8_0 rows of 96 values (not a multiple of the kernels' 64-value steps), a dense F32 part
    q8, w8 = _tensor("Q8_0", 12, 96, seed=1)
    dense = torch.randn(5, 96, generator=torch.Generator().manual_seed(2))
    bias = torch.randn(17)
    linear = compiled.Linear([compiled.Part.ggml(8, q8, 96), compiled.Part.dense(dense)], bias)
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(3))
    residual = torch.randn(3, 17)
    expected = torch.cat([_expected(x, w8), x.double() @ dense.double().T], dim=1) + bias.double() + residual.double()
    for path in compiled.instruction_sets():
        got = linear.apply(x, residual, path).double()
        assert torch.allclose(got, expected, atol=1e-4), path


def test_a_tensor_whose_bytes_do_not_fit_its_type_is_refused():
    raw, _ = _tensor("Q4_K", 4, 256)
    with pytest.raises(RuntimeError, match="do not hold"):
        compiled.Part.ggml(int(GGMLQuantizationType.Q4_K), raw, 512)
    with pytest.raises(RuntimeError, match="not a block type"):
        compiled.Part.ggml(int(GGMLQuantizationType.IQ2_XXS), raw, 256)
