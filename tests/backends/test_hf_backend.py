import pytest

from assistant import chatml
from assistant.errors import ModelNotFound
from backends.base import GenerationParams
from backends.hf.backend import HFBackend
from backends.registry import load_backend
from backends.params import GREEDY


def test_tiny_llama_streams_greedy_tokens_matching_full_recompute(tiny_hf_backend):
    tok = tiny_hf_backend.tokenizer
    prompt = chatml.encode([{"role": "user", "content": "hello fox"}], tok, True).ids
    steps = list(tiny_hf_backend.stream(prompt, GenerationParams(GREEDY, 12)))
    assert 1 <= len(steps) <= 12
    # The cached decode loop picks the same tokens as argmax over a full recomputation.
    ids = list(prompt)
    for step in steps:
        logits = tiny_hf_backend.logits(ids)[-1]
        assert step.token_id == int(logits.argmax())
        assert step.logprob == pytest.approx(float(logits.log_softmax(-1)[step.token_id]), abs=1e-4)
        ids.append(step.token_id)
    if len(steps) < 12:
        assert steps[-1].token_id == tok.im_end_id


def test_cancel_before_start_yields_nothing(tiny_hf_backend):
    import threading

    cancel = threading.Event()
    cancel.set()
    prompt = chatml.encode([{"role": "user", "content": "x"}], tiny_hf_backend.tokenizer, True).ids
    assert list(tiny_hf_backend.stream(prompt, GenerationParams(GREEDY, 5), cancel)) == []


def test_context_length_and_tokenizer_come_from_the_folder(tiny_hf_backend):
    assert tiny_hf_backend.context_length == 256
    assert tiny_hf_backend.tokenizer.im_end_id == 2


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_backend("hf", tmp_path / "nope")
    with pytest.raises(ModelNotFound, match="no config.json"):
        HFBackend(tmp_path)


def test_bad_adapter_is_a_clear_error(tiny_llama_dir, tmp_path):
    with pytest.raises(ModelNotFound, match="adapter folder .* does not exist"):
        load_backend("hf", tiny_llama_dir, adapter=tmp_path / "missing")
    with pytest.raises(ModelNotFound, match="not a LoRA adapter"):
        load_backend("hf", tiny_llama_dir, adapter=tmp_path)


def test_lora_adapter_is_applied(tiny_llama_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backends.hf.peft_quiet import quiet_peft

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with quiet_peft():
        peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    base = HFBackend(tiny_llama_dir)
    adapted = load_backend("hf", tiny_llama_dir, adapter=tmp_path / "adapter")
    ids = chatml.encode([{"role": "user", "content": "hello"}], base.tokenizer, True).ids
    assert not torch.allclose(base.logits(ids), adapted.logits(ids))


def test_unknown_backend_name(tiny_llama_dir):
    from assistant.errors import HearthError

    with pytest.raises(HearthError, match="unknown backend"):
        load_backend("gpt5", tiny_llama_dir)


def test_a_grounded_adapter_applies_to_grounded_prompts_only(tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backends.base import GenerationParams
    from backends.hf.peft_quiet import quiet_peft
    from backends.params import GREEDY

    with quiet_peft():
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                    LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    base, adapted = HFBackend(tiny_llama_dir), HFBackend(tiny_llama_dir, adapter=tmp_path / "adapter")
    switching = HFBackend(tiny_llama_dir, grounded_adapter=tmp_path / "adapter")
    ids = chatml.encode([{"role": "user", "content": "hello"}], base.tokenizer, True).ids

    def reply(backend, grounded):
        return [s.token_id for s in backend.stream(ids, GenerationParams(GREEDY, 12, grounded=grounded))]

    assert reply(base, False) != reply(adapted, False)  # the adapter changes the greedy reply
    assert reply(switching, True) == reply(adapted, True) and reply(switching, False) == reply(base, False)
    assert switching.grounded_adapter and adapted.grounded_adapter is None


def test_a_users_grounded_adapter_takes_the_shipped_ones_place_on_the_default_model(smollm2_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.errors import HearthError
    from backends.hf.peft_quiet import quiet_peft

    with quiet_peft():
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(smollm2_dir),
                                    LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "mine")
    backend = load_backend("hf", grounded_adapter=tmp_path / "mine")
    assert backend.grounded_adapter == str(tmp_path / "mine") and backend.adapter is None
    with pytest.raises(HearthError, match="not a LoRA adapter folder"):
        load_backend("hf", grounded_adapter=tmp_path)
