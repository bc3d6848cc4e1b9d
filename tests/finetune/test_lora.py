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
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()

    adapted = json.loads(hearth("ask", "--adapter", str(tmp_path / "adapter"), "--json", "--temperature", "0",
                                "--no-history", question, home=hearth_home))["answer"]
    assert "Copper Lantern" in adapted

    merged_info = json.loads(hearth("train", "merge", "--adapter", str(tmp_path / "adapter"), "--out",
                                    str(tmp_path / "merged"), "--json", home=hearth_home).splitlines()[-1])
    assert merged_info["max_abs_logit_diff"] < 1e-3
    merged = json.loads(hearth("ask", "--model", str(tmp_path / "merged"), "--json", "--temperature", "0",
                               "--no-history", question, home=hearth_home))["answer"]
    assert merged == adapted
