"""Hearth's q8/q4 kernels against the plain PyTorch reference, GGUF blocks, and the fallback."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from backends.scratch import blockquant as bq
from backends.scratch import kernels

needs_kernels = pytest.mark.skipif(kernels.load() is None, reason=f"kernels not built: {kernels.why_not()}")

# (activation rows, output rows, input width): ragged widths (not multiples of 32 or of 8), odd row
# counts, more activation rows than one multi-row pass takes (8), SmolLM2's own shapes.
SHAPES = [(1, 7, 50), (3, 33, 576), (9, 101, 1000), (2, 576, 1536), (1, 5, 31), (17, 4, 96)]


def _weights(kind, n, k, seed):
    weight = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    return bq.quantize_q8(weight) if kind == "q8" else bq.quantize_q4(weight)


@needs_kernels
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_activation_quantization_is_exactly_the_reference(m, n, k):
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(k)) * 3
    nb = -(-k // bq.QK)
    got, expected = kernels.load().quantize_activations(x, nb), bq.quantize_activations(x, nb)
    assert torch.equal(got[0], expected[0])  # the int8 values, padding zeros included
    assert torch.equal(got[1], expected[1])  # the scales
    assert torch.allclose(got[2], expected[2], rtol=1e-6, atol=0)


PATHS = ["avx512vnni", "avx2", "portable"]


def _path_or_skip(path):
    if kernels.load() is None or path not in kernels.load().instruction_sets():
        pytest.skip(f"this CPU has no {path} path")


@needs_kernels
@pytest.mark.parametrize("kind", ["q8", "q4"])
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("path", PATHS)
def test_products_equal_the_reference(kind, m, n, k, path):
    # The integer block sums are exact on every path; only the float accumulation order differs.
    _path_or_skip(path)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m + n))
    tensors = _weights(kind, n, k, seed=n)
    native = kernels.load()
    if kind == "q8":
        got, expected = native.q8_matmul(x, *tensors, path), bq.q8_matmul_reference(x, *tensors)
    else:
        got, expected = native.q4_matmul(x, *tensors, path), bq.q4_matmul_reference(x, *tensors)
    scale = expected.abs().max()
    assert got.shape == (m, n)
    assert float((got - expected).abs().max()) <= 1e-5 * float(scale) + 1e-6


@needs_kernels
@pytest.mark.parametrize("kind", ["q8", "q4"])
def test_extreme_blocks_are_exact(kind):
    # Integer weights and activations at the ends of their ranges (int8 -128 and 127, nibbles 0 and
    # 15, activations +-127) with unit scales: every path's block sums are exact integers, so every
    # path gives exactly the reference.
    k = 96 + 32 + 5  # five blocks: pairs and a ragged odd tail for the 512-bit path
    nb = -(-k // bq.QK)
    rng = np.random.default_rng(9)
    if kind == "q8":
        values = torch.from_numpy(rng.choice([-128, -127, -1, 0, 1, 127], size=(7, nb * bq.QK)).astype(np.int8))
        values[:, k:] = 0
        tensors = (values, torch.ones(7, nb, dtype=torch.float16))
    else:
        nibbles = rng.choice([0, 1, 14, 15], size=(7, nb, 2, bq.QK // 2)).astype(np.uint8)
        packed = (nibbles[:, :, 0] | (nibbles[:, :, 1] << 4)).reshape(7, nb * bq.QK // 2)
        tensors = (torch.from_numpy(packed), torch.ones(7, nb, dtype=torch.float16),
                   torch.zeros(7, nb, dtype=torch.float16))
    x = torch.from_numpy(rng.choice([-127.0, -3.0, 0.0, 5.0, 127.0], size=(3, k)).astype(np.float32))
    x[:, 0] = 127.0  # each block's scale is then 1: the activations quantize to themselves
    for b in range(1, nb):
        x[:, b * bq.QK] = 127.0
    reference = (bq.q8_matmul_reference if kind == "q8" else bq.q4_matmul_reference)(x, *tensors)
    product = kernels.load().q8_matmul if kind == "q8" else kernels.load().q4_matmul
    for path in kernels.load().instruction_sets():
        assert torch.equal(product(x, *tensors, path), reference), path


@needs_kernels
def test_a_path_this_cpu_lacks_is_refused():
    native = kernels.load()
    assert native.instruction_sets()[-1] == "portable" and native.instruction_set() == native.instruction_sets()[0]
    x, tensors = torch.randn(1, 32), _weights("q8", 2, 32, seed=1)
    with pytest.raises(RuntimeError, match="cannot run the 'sse9' kernels"):
        native.q8_matmul(x, *tensors, "sse9")


@needs_kernels
@pytest.mark.parametrize("kind", ["q8", "q4"])
@pytest.mark.parametrize("path", PATHS)
def test_each_row_is_computed_on_its_own(kind, path):
    # Speculative verification needs row i of a k-row product to equal a one-row product, bit for bit.
    _path_or_skip(path)
    x = torch.randn(11, 576, generator=torch.Generator().manual_seed(1))
    tensors = _weights(kind, 200, 576, seed=2)
    product = kernels.load().q8_matmul if kind == "q8" else kernels.load().q4_matmul
    together = product(x, *tensors, path)
    for i in range(11):
        assert torch.equal(together[i], product(x[i : i + 1], *tensors, path)[0])


@needs_kernels
def test_silu_mul_equals_pytorch_even_far_from_zero():
    # gate then up, 1,543 columns (a ragged end for the 8-wide loop), values out to +-100 where exp
    # overflows one way and underflows the other
    gate = torch.cat([torch.linspace(-100, 100, 1543)[None], torch.randn(2, 1543) * 4])
    up = torch.randn(3, 1543)
    got = kernels.load().silu_mul(torch.cat([gate, up], dim=1))
    expected = torch.nn.functional.silu(gate) * up
    assert torch.allclose(got, expected, rtol=2e-6, atol=1e-6)


def _rotate(v, cos, sin):
    half = v.shape[-1] // 2
    x1, x2 = v[..., :half], v[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


@needs_kernels
@pytest.mark.parametrize("pos,rows", [(0, 1), (37, 3), (200, 9)])
def test_attention_equals_pytorch(pos, rows):
    # RoPE, the cache write and grouped-query attention of a step's rows at pos.. against plain
    # PyTorch (1 to 209 keys: whole 8-key groups and ragged ends)
    H, KV, D, L = 9, 3, 64, 256
    g = torch.Generator().manual_seed(pos)
    k_cache, v_cache = torch.randn(1, KV, L, D, generator=g), torch.randn(1, KV, L, D, generator=g)
    qkv = torch.randn(rows, (H + 2 * KV) * D, generator=g)
    cos, sin = torch.randn(rows, D // 2, generator=g), torch.randn(rows, D // 2, generator=g)
    keys, values = k_cache.clone(), v_cache.clone()
    got = kernels.load().attend(qkv, k_cache, v_cache, pos, cos, sin, H, KV, False)
    heads = qkv.view(rows, H + 2 * KV, D)
    expected = []
    for i in range(rows):
        q = _rotate(heads[i, :H], cos[i], sin[i])
        keys[0, :, pos + i] = _rotate(heads[i, H:H + KV], cos[i], sin[i])
        values[0, :, pos + i] = heads[i, H + KV:]
        k = keys[0, :, : pos + i + 1].repeat_interleave(H // KV, dim=0)
        v = values[0, :, : pos + i + 1].repeat_interleave(H // KV, dim=0)
        weights = torch.softmax((q[:, None, :] @ k.transpose(1, 2)) / D**0.5, dim=-1)
        expected.append((weights @ v).reshape(-1))
    assert torch.equal(k_cache, keys) and torch.equal(v_cache, values)
    assert torch.allclose(got, torch.stack(expected), rtol=1e-4, atol=1e-5)


@needs_kernels
def test_the_residual_is_added():
    x, residual = torch.randn(3, 64), torch.randn(3, 40)
    tensors = _weights("q4", 40, 64, seed=3)
    native = kernels.load()
    assert torch.equal(native.q4_matmul(x, *tensors, residual=residual), native.q4_matmul(x, *tensors) + residual)


@pytest.mark.parametrize("kind", ["q8", "q4"])
def test_quantized_weights_are_within_half_a_step(kind):
    weight = torch.randn(16, 70, generator=torch.Generator().manual_seed(4))
    linear = nn.Linear(70, 16, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    layer = bq.BlockQuantLinear.from_linear(linear, kind)
    blocks = bq._blocks(weight)
    levels = 127 if kind == "q8" else 15
    width = blocks.abs().amax(-1) if kind == "q8" else blocks.amax(-1) - blocks.amin(-1)
    step = (width / levels).repeat_interleave(bq.QK, dim=1)[:, :70]
    error = (layer.dequantized() - weight).abs()
    # half a step of rounding plus the fp16 rounding of the block's scale (and minimum)
    assert bool((error <= step / 2 + weight.abs().amax() * 2**-10).all())


@pytest.mark.parametrize("name", ["Q8_0", "Q4_1", "Q4_0"])
def test_gguf_blocks_load_as_they_are(name):
    from gguf import GGMLQuantizationType, quants

    weight = np.random.default_rng(5).standard_normal((6, 96)).astype(np.float32)
    kind_type = GGMLQuantizationType[name]
    raw = quants.quantize(weight, kind_type)
    kind, tensors = bq.from_gguf_rows(name, raw)
    layer = bq.BlockQuantLinear(kind, tensors, 96)
    assert torch.equal(layer.dequantized(), torch.from_numpy(quants.dequantize(raw, kind_type)))


def test_without_kernels_the_reference_runs_and_says_so():
    code = ("import torch; from torch import nn; from backends.scratch import kernels, blockquant as bq;"
            "layer = bq.BlockQuantLinear.from_linear(nn.Linear(64, 8), 'q4');"
            "x = torch.randn(2, 64); y = layer(x);"
            "print(kernels.describe()); print(bool(torch.allclose(y, x @ layer.dequantized().T + layer.bias, atol=0.2)))")
    env = dict(os.environ, HEARTH_NO_KERNELS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines() == ["PyTorch reference (no compiled kernels: HEARTH_NO_KERNELS is set)", "True"]


@pytest.mark.slow
def test_q4_loads_the_bundled_gguf_blocks_as_they_are(smollm2_dir):
    # The bundled model's float weights were dequantized from its Q4_1 blocks: loading those blocks
    # directly (Q/K rows reordered as the converter does) must give exactly the same weights.
    import copy

    from backends.gguf import source_of
    from backends.scratch.quantize import quantize_blocks
    from backends.scratch.weights import load_model

    base = load_model(smollm2_dir).fuse_for_inference()
    model, from_file = quantize_blocks(copy.deepcopy(base), "q4", source_of(smollm2_dir))
    assert from_file == 7 * base.config.num_blocks + 1  # every projection, and the output (Q8_0)
    for i in (0, base.config.num_blocks - 1):
        for name in ("attention.W_QKV", "attention.W_O", "mlp.W_13", "mlp.W_2"):
            expected = base.get_submodule(f"blocks.{i}.{name}").weight.detach()
            assert torch.equal(model.get_submodule(f"blocks.{i}.{name}").dequantized(), expected)
    assert torch.equal(model.output.dequantized(), base.output.weight.detach())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["q8", "q4"])
def test_block_precisions_answer_the_capital_of_france(precision, smollm2_dir):
    from tests.helpers import hearth

    run = hearth("ask", "--backend", "scratch", "--precision", precision, "--temperature", "0",
                 "What is the capital of France?")
    assert "Paris" in run.stdout


@needs_kernels
def test_a_build_killed_halfway_blocks_nothing():
    # What a killed build leaves (its private folder, PyTorch's lock file in it) is never waited on.
    leftover = kernels.build_folder().parent / f"{kernels.build_folder().name}.building-killed"
    leftover.mkdir(exist_ok=True)
    (leftover / "lock").touch()
    try:
        code = "from backends.scratch import kernels; print(kernels.describe())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
        assert out.stdout.startswith("Hearth kernels (")
    finally:
        import shutil

        shutil.rmtree(leftover)
