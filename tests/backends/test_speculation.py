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


@pytest.mark.slow
def test_the_hf_backends_grounded_answers_speculate_to_the_same_reply(smollm2_dir, embedder):
    # The default backend decodes the grounded-answer adapter's answers with speculation: the reply
    # its stream gives is the one plain decoding gives, in fewer forward passes.
    from assistant import rag
    from backends.hf.backend import HFBackend
    from backends.hf.default_model import grounded_adapter_dir

    if grounded_adapter_dir() is None:
        pytest.skip("no grounded-answer adapter ships")
    backend = HFBackend(smollm2_dir, grounded_adapter=grounded_adapter_dir())
    question = "Who were the Normans descended from?"
    sources = rag.focused([rag.Source(1, 0, "normans.md", 1, None, "", SOURCE, 1.0)], question,
                          embedder.encode([question])[0], embedder, rag.ADAPTER_FOCUS)
    system, turn = rag.grounded_messages(question, sources)
    ids = chatml.encode([{"role": m.role, "content": m.content} for m in (system, *turn)], backend.tokenizer,
                        add_generation_prompt=True).ids
    params = GenerationParams(GREEDY, 60, grounded=True)
    streamed = [s.token_id for s in backend.stream(ids, params)]
    stats = SpeculationStats()
    fast = [s.token_id for s in backend._stream(ids, params, None, speculate=True, stats=stats)]
    plain = [s.token_id for s in backend._stream(ids, params, None, speculate=False)]
    assert streamed == fast == plain
    assert "Norse" in backend.tokenizer.decode(plain)
    assert stats.accepted > 0 and stats.passes < len(plain)
