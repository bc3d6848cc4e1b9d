import math

import pytest
import torch

from backends.params import GREEDY, PRESETS, SamplingParams
from backends.sampling import Sampler, apply_penalties, probabilities


def _plain(t):
    return SamplingParams(temperature=t, top_k=0, top_p=1.0)


@pytest.mark.parametrize(
    "temperature, expected",
    [(0.5, [0.98, 0.02, 0.00]), (1.0, [0.87, 0.12, 0.02]), (2.0, [0.67, 0.24, 0.09])],
)
def test_book_temperature_vectors(temperature, expected):
    probs = probabilities(torch.tensor([4.0, 2.0, 0.0]), _plain(temperature))
    assert [round(p, 2) for p in probs.tolist()] == expected


def test_greedy_is_one_hot_on_argmax():
    probs = probabilities(torch.tensor([1.0, 3.0, 2.0]), GREEDY)
    assert probs.tolist() == [0.0, 1.0, 0.0]


def test_top_k_keeps_k_most_likely():
    probs = probabilities(torch.tensor([4.0, 3.0, 2.0, 1.0]), SamplingParams(temperature=1, top_k=2, top_p=1))
    expected = torch.softmax(torch.tensor([4.0, 3.0]), -1)
    assert torch.allclose(probs[:2], expected) and probs[2:].tolist() == [0.0, 0.0]


def test_top_p_keeps_the_token_that_crosses_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    probs = probabilities(logits, SamplingParams(temperature=1, top_k=0, top_p=0.6))
    # 0.5 < 0.6, so the 0.3 token that crosses 0.6 is kept; the rest are dropped.
    assert torch.allclose(probs, torch.tensor([0.5 / 0.8, 0.3 / 0.8, 0, 0]))
    probs = probabilities(logits, SamplingParams(temperature=1, top_k=0, top_p=0.5))
    assert torch.allclose(probs, torch.tensor([1.0, 0, 0, 0]))


def test_min_p_drops_tokens_below_fraction_of_max():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    probs = probabilities(logits, SamplingParams(temperature=1, top_k=0, top_p=1, min_p=0.4))
    assert torch.allclose(probs, torch.tensor([0.5 / 0.8, 0.3 / 0.8, 0, 0]))


def test_book_penalty_formulas():
    logits = torch.tensor([5.0, 5.0, 5.0])
    counts = torch.tensor([0.0, 1.0, 3.0])
    out = apply_penalties(logits, counts, SamplingParams(frequency_penalty=0.5, presence_penalty=1.0, repetition_penalty=1.0))
    assert out.tolist() == [5.0, 5.0 - 0.5 - 1.0, 5.0 - 1.5 - 1.0]


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    out = apply_penalties(torch.tensor([2.0, -2.0, 2.0]), torch.tensor([1.0, 1.0, 0.0]),
                          SamplingParams(repetition_penalty=2.0))
    assert out.tolist() == [1.0, -4.0, 2.0]


def test_sampler_counts_drive_penalties():
    sampler = Sampler(SamplingParams(temperature=0, top_k=0, presence_penalty=10.0, repetition_penalty=1.0), vocab_size=3)
    logits = torch.tensor([3.0, 2.0, 0.0])
    first = int(sampler.sample(logits)[0])
    second = int(sampler.sample(logits)[0])
    assert (first, second) == (0, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": 1.0}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"temperature": float("nan")}, "temperature"),
    ],
)
def test_invalid_settings_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))

    def draw(seed):
        sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=seed), 50)
        return [int(sampler.sample(logits)[0]) for _ in range(20)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_logprob_is_the_models_unmodified_log_probability():
    logits = torch.tensor([4.0, 2.0, 0.0])
    token, logprob = Sampler(GREEDY, 3).sample(logits).tolist()
    assert token == 0
    assert math.isclose(logprob, torch.log_softmax(logits, -1)[0].item(), rel_tol=1e-6)


def test_presets_match_the_documented_values():
    p = PRESETS["precise"]
    assert (p.temperature, p.top_k, p.repetition_penalty) == (0.2, 10, 1.1) and SamplingParams() == p
    b = PRESETS["balanced"]
    assert (b.temperature, b.top_k, b.top_p) == (0.7, 50, 0.9)
    c = PRESETS["creative"]
    assert (c.temperature, c.top_k, c.top_p) == (1.0, 200, 0.95)
