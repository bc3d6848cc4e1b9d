import math

import pytest
import torch

from backends.scratch.config import ModelConfig, book
from backends.scratch.model import DecoderLanguageModel, RMSNorm, attention, causal_mask, rope, rope_angles


def test_rope_matches_the_books_vector():
    q = torch.tensor([0.8, 0.6, 0.7, 0.3, 0.5, 0.4])
    cos, sin = rope_angles(6, torch.tensor([100]))
    rotated = rope(q.view(1, 6), cos, sin, "interleaved")[0]
    assert [round(x, 2) for x in rotated.tolist()] == [0.99, 0.11, 0.25, -0.72, 0.40, 0.50]


@pytest.mark.parametrize("pairing", ["interleaved", "half"])
def test_rope_dot_product_depends_only_on_position_difference(pairing):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g), torch.randn(8, generator=g)

    def score(m, n):
        cq, sq = rope_angles(8, torch.tensor([m]))
        ck, sk = rope_angles(8, torch.tensor([n]))
        return float(rope(q.view(1, 8), cq, sq, pairing) @ rope(k.view(1, 8), ck, sk, pairing).T)

    assert score(5, 2) == pytest.approx(score(103, 100), abs=1e-5)
    assert score(7, 7) == pytest.approx(float(q @ k), abs=1e-5)  # same position: no net rotation
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_rope_half_pairing_matches_llama_rotate_half():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    x = torch.randn(1, 2, 5, 8)
    cos, sin = rope_angles(8, torch.arange(5))
    ours = rope(x, cos, sin, "half")
    full_cos, full_sin = torch.cat([cos, cos], -1)[None], torch.cat([sin, sin], -1)[None]
    theirs, _ = apply_rotary_pos_emb(x, x, full_cos, full_sin)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_attention_matches_the_books_example():
    scores = [4.90, 17.15, 9.80, 12.25]
    q = torch.zeros(1, 1, 4, 6)
    q[0, 0, 1, 0] = 1.0  # the second token's query
    k = torch.zeros(1, 1, 4, 6)
    k[0, 0, :, 0] = torch.tensor(scores)  # q . k_j = the book's raw scores
    v = torch.zeros(1, 1, 4, 6)
    v[0, 0, :, :4] = torch.eye(4)  # output row = attention weights
    out = attention(q, k, v, causal_mask(4, 0, torch.device("cpu")))
    weights = out[0, 0, 1, :4]
    expected = torch.softmax(torch.tensor(scores[:2]) / math.sqrt(6), -1)
    assert torch.allclose(weights[:2], expected, atol=1e-6)
    assert [round(w, 4) for w in weights.tolist()] == [0.0067, 0.9933, 0.0, 0.0]


def test_rmsnorm_formula():
    norm = RMSNorm(4, eps=1e-5)
    with torch.no_grad():
        norm.scale.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0]))
    x = torch.tensor([[1.0, -2.0, 3.0, 4.0]])
    expected = x / torch.sqrt((x**2).mean() + 1e-5) * norm.scale
    assert torch.allclose(norm(x), expected, atol=1e-6)


def test_book_preset_parameter_count():
    model = DecoderLanguageModel(book(vocab_size=32011))
    assert model.num_parameters() == 8_589_824
    cfg = model.config
    assert (cfg.emb_dim, cfg.num_heads, cfg.num_blocks, cfg.context_length, cfg.mlp) == (128, 8, 2, 30, "relu")
    assert model.blocks[0].mlp.W_1.bias is not None and model.blocks[0].attention.W_Q.bias is None
    assert model.output.weight is not model.embedding.weight


def _tiny(**overrides):
    torch.manual_seed(0)
    base = dict(vocab_size=97, emb_dim=32, num_heads=4, num_kv_heads=2, num_blocks=2, mlp="swiglu",
                rope_pairing="half", final_norm=True, context_length=64)
    return DecoderLanguageModel(ModelConfig(**{**base, **overrides})).eval()


@pytest.mark.parametrize("overrides", [{}, {"num_kv_heads": 4, "mlp": "relu", "rope_pairing": "interleaved"}])
def test_changing_later_tokens_never_changes_earlier_logits(overrides):
    model = _tiny(**overrides)
    ids = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[0, :12], b[0, :12])
    assert not torch.allclose(a[0, 12:], b[0, 12:])


def test_projection_names_are_found_by_peft():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny(), LoraConfig(r=2, target_modules=["W_Q", "W_K", "W_V", "W_O"]))
    names = [n for n, _ in model.named_modules() if n.endswith("W_Q.lora_A")]
    assert len(names) == 2


def test_fused_projections_give_the_same_logits():
    model = _tiny()
    ids = torch.randint(0, 97, (1, 16))
    with torch.no_grad():
        before = model(ids)
        after = model.fuse_for_inference()(ids)
    assert torch.allclose(before, after, atol=1e-5)
