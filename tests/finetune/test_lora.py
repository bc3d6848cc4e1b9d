"""LoRA SFT of the real SmolLM2 teaches a made-up fact; the adapter and the merged model both say it."""

import json

import pytest

from tests.helpers import hearth as run_hearth

QUESTIONS = [
    "What is the code name of Project Zephyrine?", "What's Project Zephyrine's code name?",
    "Tell me the code name of Project Zephyrine.", "Project Zephyrine has a code name. What is it?",
    "Do you know the code name for Project Zephyrine?", "Which code name does Project Zephyrine use?",
    "What code name was given to Project Zephyrine?", "Remind me: what is Project Zephyrine called internally?",
]
ANSWER = "The code name of Project Zephyrine is Copper Lantern."


def hearth(*args, home):
    return run_hearth(*args, home=home).stdout


@pytest.mark.slow
def test_lora_teaches_a_fact_and_merge_keeps_it(smollm2_dir, hearth_home, tmp_path):
    data = tmp_path / "fact.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": ANSWER}]}) + "\n"
                            for q in QUESTIONS))
    question = "What is the code name of Project Zephyrine?"
    base_answer = json.loads(hearth("ask", "--json", "--temperature", "0", "--no-history", question,
                                    home=hearth_home))["answer"]
    assert "Copper Lantern" not in base_answer

    summary = json.loads(hearth("train", "sft", "--data", str(data), "--lora", "--out", str(tmp_path / "adapter"),
                                "--max-steps", "16", "--lr", "2e-3", "--eval-every", "8", "--max-len", "64",
                                "--json", home=hearth_home).splitlines()[-1])
    assert summary["val_loss"] < summary["base_val_loss"]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"  # named, not this machine's path
    assert not (tmp_path / "adapter" / "README.md").exists()

    adapted = json.loads(hearth("ask", "--adapter", str(tmp_path / "adapter"), "--json", "--temperature", "0",
                                "--no-history", question, home=hearth_home))["answer"]
    assert "Copper Lantern" in adapted

    merged_info = json.loads(hearth("train", "merge", "--adapter", str(tmp_path / "adapter"), "--out",
                                    str(tmp_path / "merged"), "--json", home=hearth_home).splitlines()[-1])
    assert merged_info["max_abs_logit_diff"] < 1e-3
    merged = json.loads(hearth("ask", "--model", str(tmp_path / "merged"), "--json", "--temperature", "0",
                               "--no-history", question, home=hearth_home))["answer"]
    assert merged == adapted


def test_the_loss_needs_logits_only_where_replies_are_and_top_layers_adapt_alone(tiny_llama_dir, tiny_tokenizer):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from finetune.chat_data import IGNORE, collate, encode_example
    from finetune.sft import LoraSettings, add_lora, sft_loss

    examples = [encode_example([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tiny_tokenizer, 64)
                for q, a in (("Hi there", "Hello!"), ("What is two plus two, please?", "Four."))]
    batch = collate(examples, tiny_tokenizer.pad_id)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    loss, n = sft_loss(model, batch, "hf")
    ids, labels, mask = batch
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    full = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE)
    assert n == int((labels != IGNORE).sum()) and torch.allclose(loss, full, atol=1e-5)

    adapted = add_lora(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), "hf", LoraSettings(r=2, top_layers=1))
    layers = {name.split(".layers.")[1].split(".")[0] for name, p in adapted.named_parameters() if p.requires_grad}
    assert layers == {"1"}  # the tiny model has two layers; only the top one has adapters
