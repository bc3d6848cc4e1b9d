import json

import pytest
import torch

from assistant.errors import ModelNotFound
from backends.scratch.config import book
from backends.scratch.model import DecoderLanguageModel
from backends.scratch.weights import load_model, save_native


def _hf_logits(folder, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_tiny_llama_import_matches_transformers(tiny_llama_dir):
    ids = list(range(3, 60))
    ours = load_model(tiny_llama_dir)
    assert ours.config.num_kv_heads == 2 and ours.config.rope_pairing == "half"
    with torch.no_grad():
        logits = ours(torch.tensor([ids]))[0]
    assert (logits - _hf_logits(tiny_llama_dir, ids)).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_smollm2_import_matches_transformers(smollm2_dir):
    ids = list(range(100, 164))
    with torch.no_grad():
        logits = load_model(smollm2_dir)(torch.tensor([ids]))[0]
    assert (logits - _hf_logits(smollm2_dir, ids)).abs().max().item() <= 1e-3


def test_native_checkpoint_round_trip(tmp_path, tiny_tokenizer_dir):
    torch.manual_seed(0)
    model = DecoderLanguageModel(book(vocab_size=300)).eval()
    folder = save_native(model, tmp_path / "ckpt", tokenizer_json=tiny_tokenizer_dir / "tokenizer.json")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert json.loads((folder / "config.json").read_text())["format"] == "hearth-scratch"
    loaded = load_model(folder)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"format": "hearth-scratch", **book(300).to_dict()}))
    with pytest.raises(ModelNotFound, match="no model.safetensors"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelNotFound, match="corrupt checkpoint"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelNotFound, match="gpt2"):
        load_model(tmp_path)
