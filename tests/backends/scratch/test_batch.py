"""Continuous batching: concurrent sequences decode together, join and leave between steps, and
each gets exactly the greedy reply it gets alone."""

import threading

import pytest

from assistant import chatml
from assistant.chatml import ChatMessage
from backends.base import GenerationParams, QueueFull
from backends.params import GREEDY
from backends.scratch.backend import ScratchBackend
from backends.scratch.batch import BatchedBackend
from backends.serial import SerialBackend

QUESTIONS = [("What is the capital of France?", 12), ("Write a haiku about the sea.", 30),
             ("List three colours.", 20), ("Explain what a cache is, in one paragraph.", 40), ("Say hi.", 6)]


@pytest.fixture(scope="module")
def scratch(smollm2_dir):
    return ScratchBackend(smollm2_dir)


def prompt(backend, question, system=None):
    messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", question)]
    return chatml.encode(messages, backend.tokenizer, add_generation_prompt=True).ids


def tokens(stream) -> list[int]:
    return [step.token_id for step in stream]


@pytest.mark.slow
def test_concurrent_greedy_replies_equal_each_served_alone(scratch):
    alone = [tokens(scratch.stream(prompt(scratch, q), GenerationParams(GREEDY, n))) for q, n in QUESTIONS]
    batched = BatchedBackend(scratch, slots=4)  # five requests for four slots: one waits for a slot
    try:
        got: list = [None] * len(QUESTIONS)

        def run(i: int) -> None:
            q, n = QUESTIONS[i]
            got[i] = tokens(batched.stream(prompt(scratch, q), GenerationParams(GREEDY, n)))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == alone
        engine = batched.engine
        assert engine.rows_decoded > engine.steps  # steps did decode several sequences at once
        assert (batched.active, batched.queued) == (0, 0)
    finally:
        batched.close()


@pytest.mark.slow
def test_a_shared_system_prompt_is_computed_once_and_replies_do_not_change(scratch):
    from assistant.config import DEFAULT_SYSTEM_PROMPT

    questions = [q for q, _ in QUESTIONS[:3]]
    prompts = [prompt(scratch, q, DEFAULT_SYSTEM_PROMPT) for q in questions]
    alone = [tokens(scratch.stream(p, GenerationParams(GREEDY, 16))) for p in prompts]
    batched = BatchedBackend(scratch, slots=2)
    try:
        first = tokens(batched.stream(prompts[0], GenerationParams(GREEDY, 16)))
        assert batched.engine.prompt_tokens_reused == 0  # nothing held yet
        got: list = [None] * 3

        def run(i: int) -> None:
            got[i] = tokens(batched.stream(prompts[i], GenerationParams(GREEDY, 16)))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [first] + got == [alone[0]] + alone
        system_turn = len(chatml.encode([ChatMessage("system", DEFAULT_SYSTEM_PROMPT)], scratch.tokenizer).ids)
        assert batched.engine.prompt_tokens_reused >= 3 * system_turn  # each later request copied it
    finally:
        batched.close()


@pytest.mark.slow
def test_a_cancelled_or_abandoned_sequence_frees_its_slot(scratch):
    batched = BatchedBackend(scratch, slots=1, max_queue=1)
    try:
        ids = prompt(scratch, "Tell me a long story about a lighthouse keeper.")
        cancel = threading.Event()
        first = batched.stream(ids, GenerationParams(GREEDY, 400), cancel)
        next(first)
        waiting = batched.stream(ids, GenerationParams(GREEDY, 3))  # queued behind it
        with pytest.raises(QueueFull):
            batched.stream(ids, GenerationParams(GREEDY, 3))
        cancel.set()
        assert len(list(first)) < 399  # stopped at the next step
        assert len(tokens(waiting)) == 3  # and the waiting one got the slot
        abandoned = batched.stream(ids, GenerationParams(GREEDY, 400))
        next(abandoned)
        abandoned.close()  # the consumer goes away
        assert len(tokens(batched.stream(ids, GenerationParams(GREEDY, 2)))) == 2
        assert batched.active == 0
    finally:
        batched.close()


def test_serial_backend_runs_one_stream_at_a_time(tiny_hf_backend):
    serial = SerialBackend(tiny_hf_backend, max_queue=1)
    ids = prompt(tiny_hf_backend, "hello")
    first = serial.stream(ids, GenerationParams(GREEDY, 5))
    next(first)  # holds the turn
    assert serial.active == 1
    second = serial.stream(ids, GenerationParams(GREEDY, 5))
    with pytest.raises(QueueFull):
        serial.stream(ids, GenerationParams(GREEDY, 5))
    done = threading.Event()

    def drain() -> None:
        list(second)
        done.set()

    threading.Thread(target=drain).start()
    assert not done.wait(0.5)  # waits for the first to finish
    list(first)
    assert done.wait(30) and (serial.active, serial.queued) == (0, 0)
