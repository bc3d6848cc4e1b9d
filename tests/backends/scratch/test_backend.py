import json

import pytest

from assistant import chatml
from assistant.conversation import ChatSession, DoneEvent
from assistant.errors import HearthError
from backends.base import GenerationParams
from backends.registry import load_backend
from assistant.settings import ChatSettings
from backends.params import GREEDY
from tests.helpers import hearth


def test_scratch_backend_matches_hf_backend_greedy(tiny_llama_dir, tiny_hf_backend):
    scratch = load_backend("scratch", tiny_llama_dir)
    prompt = chatml.encode([{"role": "user", "content": "hello fox"}], scratch.tokenizer, True).ids
    ours = [s.token_id for s in scratch.stream(prompt, GenerationParams(GREEDY, 20))]
    theirs = [s.token_id for s in tiny_hf_backend.stream(prompt, GenerationParams(GREEDY, 20))]
    assert ours == theirs


def test_follow_up_turn_reuses_the_cache(tiny_llama_dir):
    backend = load_backend("scratch", tiny_llama_dir)
    session = ChatSession(backend, ChatSettings(sampling=GREEDY, max_new_tokens=6))
    list(session.send("hello"))
    first_prompt = len(session.last_plan.ids)
    list(session.send("and more"))
    # the whole first prompt was reused: only the reply's end and the new turn were prefilled
    assert 0 < backend.engine.last_prefill_tokens <= len(session.last_plan.ids) - first_prompt


def test_precision_and_adapter_errors(tiny_llama_dir):
    with pytest.raises(HearthError, match="unknown precision"):
        load_backend("scratch", tiny_llama_dir, precision="fp8")
    with pytest.raises(HearthError, match="scratch backend"):
        load_backend("hf", tiny_llama_dir, precision="int8")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fast_precisions_run(tiny_llama_dir, precision):
    backend = load_backend("scratch", tiny_llama_dir, precision=precision)
    session = ChatSession(backend, ChatSettings(sampling=GREEDY, max_new_tokens=5))
    done = [e for e in session.send("hi") if isinstance(e, DoneEvent)][0]
    assert done.finish_reason in ("stop", "length") and done.error is None


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_scratch_backend_answers_paris_on_smollm2(smollm2_dir, hearth_home, precision):
    data = json.loads(hearth("ask", "--backend", "scratch", "--precision", precision, "--json", "--seed", "0",
                             "What is the capital of France?").stdout)
    assert "Paris" in data["answer"] and (data["backend"], data["precision"]) == ("scratch", precision)
