import pytest
import torch

from backends.base import GenerationParams
from backends.params import GREEDY
from backends.scratch.config import ModelConfig
from backends.scratch.engine import MIN_WINDOW, Engine
from backends.scratch.model import DecoderLanguageModel

VOCAB = 101
# the fixed-shape decode step runs eagerly on the CPU and as CUDA graphs on a GPU, when there is one
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _model(kv_heads, context_length=256):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, emb_dim=48, num_heads=6, num_kv_heads=kv_heads, num_blocks=3,
                         mlp="swiglu", mlp_hidden=96, rope_pairing="half", final_norm=True,
                         context_length=context_length)
    return DecoderLanguageModel(config).eval()


def _full_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids], device=model.embedding.weight.device))[0, -1]


def _check_cached_equals_uncached(engine, prompt, steps=50):
    """Greedy-decode `steps` tokens with the cache and compare every step with a full recompute."""
    logits = engine.prefill(prompt)
    ids = list(prompt)
    for _ in range(steps):
        reference = _full_logits(engine.model, ids)
        assert (logits - reference).abs().max().item() <= 1e-5
        token = int(reference.argmax())
        assert int(logits.argmax()) == token
        ids.append(token)
        logits = engine.step(torch.tensor([token], device=engine.device), token)
    assert engine.cached_ids == ids
    return ids


@pytest.mark.parametrize("kv_heads", [6, 2, 1], ids=["mha", "gqa", "mqa"])
def test_cached_decoding_equals_full_recomputation(kv_heads):
    engine = Engine(_model(kv_heads))
    _check_cached_equals_uncached(engine, list(range(3, 20)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kv_heads", [6, 2], ids=["mha", "gqa"])
def test_fixed_shape_steps_equal_full_recomputation(kv_heads, device):
    """The window grows from 256 to 512 slots mid-answer; every step still matches a full recompute."""
    engine = Engine(_model(kv_heads, context_length=1024).to(device), fixed_shape_steps=True)
    prompt = [3 + i % 90 for i in range(MIN_WINDOW - 20)]
    ids = _check_cached_equals_uncached(engine, prompt, steps=50)
    assert engine._window(len(ids)) == 2 * MIN_WINDOW
    # rolling back and decoding again reuses the captured windows and stays exact
    engine.prefill(prompt[:100] + [7, 8, 9])
    _check_cached_equals_uncached(engine, prompt[:100] + [7, 8, 9], steps=20)


@pytest.mark.parametrize("fixed", [False, True], ids=["eager", "fixed-shape"])
def test_prefix_reuse_prefills_only_new_tokens_and_stays_exact(fixed):
    engine = Engine(_model(2), fixed_shape_steps=fixed)
    first = _check_cached_equals_uncached(engine, list(range(3, 23)), steps=10)
    followup = first + [7, 8, 9, 10]  # next turn: the whole history plus new tokens
    _check_cached_equals_uncached(engine, followup, steps=50)
    # the second prefill computed only the 4 new tokens
    engine.reset()
    engine.prefill(first)
    engine.prefill(followup)
    assert engine.last_prefill_tokens == 4


def test_rollback_after_editing_an_earlier_turn():
    engine = Engine(_model(2))
    original = list(range(3, 40))
    _check_cached_equals_uncached(engine, original, steps=5)
    edited = original[:15] + [90, 91, 92]  # the user edited a turn: shared prefix of 15 tokens
    engine.prefill(edited)
    assert engine.last_prefill_tokens == 3 and engine.cached_ids == edited
    engine.reset()
    _check_cached_equals_uncached(engine, original, steps=5)
    engine.prefill(edited)
    _check_cached_equals_uncached(engine, edited, steps=50)


def test_identical_prompt_recomputes_last_token_only():
    engine = Engine(_model(2))
    prompt = list(range(5, 25))
    a = engine.prefill(prompt)
    b = engine.prefill(prompt)
    assert engine.last_prefill_tokens == 1 and torch.allclose(a, b, atol=1e-6)


def test_generate_streams_greedy_tokens_and_caches_them():
    engine = Engine(_model(2))
    prompt = list(range(3, 15))
    steps = list(engine.generate(prompt, GenerationParams(GREEDY, 12), frozenset()))
    ids = list(prompt)
    for step in steps:
        assert step.token_id == int(_full_logits(engine.model, ids).argmax())
        ids.append(step.token_id)
    # every token but the last was fed back into the cache
    assert engine.cached_ids == ids[:-1]


def test_cache_is_preallocated_with_the_documented_shape():
    engine = Engine(_model(2), max_len=128)
    cache = engine.caches[0]
    assert tuple(cache.k.shape) == (1, 2, 128, 8) and tuple(cache.v.shape) == (1, 2, 128, 8)
    with pytest.raises(ValueError, match="exceeds the cache"):
        engine.prefill(list(range(200)))
