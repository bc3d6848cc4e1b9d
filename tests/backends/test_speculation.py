"""Prompt-lookup speculation: what it proposes, and that it never changes a reply."""

import pytest

from assistant import chatml
from backends.base import GenerationParams
from backends.params import GREEDY, SamplingParams
from backends.speculation import PromptLookup, SpeculationStats


def test_lookup_proposes_what_followed_the_latest_copy_of_the_longest_suffix():
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 6, 2, 3])
    # suffix (2, 3) occurred twice before: the latest copy was followed by 7, 8
    assert lookup.propose(2) == [7, 8]
    lookup.extend([7])
    assert lookup.propose(5) == [8, 6, 2, 3, 7]  # (2, 3, 7) matches at its earlier copy
    assert lookup.propose(0) == []


def test_a_single_token_match_proposes_nothing_by_default():
    lookup = PromptLookup([5, 6, 7, 1, 6])
    assert lookup.propose(3) == []  # only the one-token suffix (6) occurred before
    assert lookup.propose(3, min_ngram=1) == [7, 1, 6]


@pytest.fixture(scope="module")
def q4_backend(smollm2_dir):
    from backends.scratch.backend import ScratchBackend

    return ScratchBackend(smollm2_dir, precision="q4")


SOURCE = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a "
          "region in France. They were descended from Norse raiders and pirates from Denmark, Iceland and "
          "Norway who, under their leader Rollo, agreed to swear fealty to King Charles III of West Francia.")


def _reply(backend, params, speculate):
    messages = [{"role": "system", "content": "Answer from the source, quoting it."},
                {"role": "user", "content": f"Source: {SOURCE}\n\nWho were the Normans descended from?"}]
    ids = chatml.encode(messages, backend.tokenizer, add_generation_prompt=True).ids
    stats = SpeculationStats()
    backend.engine.reset()
    steps = list(backend.engine.generate(ids, params, backend.tokenizer.stop_ids, speculate=speculate, stats=stats))
    return [(s.token_id, s.logprob) for s in steps], stats


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [GREEDY, SamplingParams(temperature=0.9, top_p=0.95, seed=7)],
                         ids=["greedy", "seeded-sampling"])
def test_speculation_gives_the_same_reply(q4_backend, sampling):
    params = GenerationParams(sampling, 80)
    plain, _ = _reply(q4_backend, params, speculate=False)
    fast, stats = _reply(q4_backend, params, speculate=True)
    assert fast == plain  # token ids and log-probabilities, bit for bit
    # the run exercised both outcomes: proposals accepted, and proposals dropped from the cache
    assert 0 < stats.accepted < stats.proposed
    assert stats.passes < len(plain)


@pytest.mark.slow
def test_a_short_follow_up_prefill_equals_single_steps(q4_backend):
    # A q8/q4 engine prefills a few new tokens through the step kernels.
    import torch

    engine = q4_backend.engine
    history = q4_backend.tokenizer.encode("The lighthouse keeper climbed the stairs at dusk.")
    follow_up = history + q4_backend.tokenizer.encode(" He lit the lamp and watched the ships come home safely.")
    engine.reset()
    engine.prefill(history)
    batched = engine.prefill(follow_up)
    assert engine.last_prefill_tokens == len(follow_up) - len(history)
    engine.reset()
    engine.prefill(history)
    for token in follow_up[len(history):]:
        stepped = engine.step(torch.tensor([token]), token)
    assert torch.equal(batched, stepped)
