"""Registered model names: what `--model NAME` and `/model NAME` switch to, and what `add` refuses."""

import json

import pytest

from assistant.errors import HearthError
from assistant.settings import ChatSettings
from backends import named_models
from backends.named_models import NamedModel


def test_a_name_switches_model_and_backend_as_registered(tiny_llama_dir, hearth_home):
    named_models.add(NamedModel("tiny", path=str(tiny_llama_dir)))
    named_models.add(NamedModel("remote", base_url="http://127.0.0.1:9/v1", model="llama3.2:3b",
                                api_key_env="MY_KEY", context_length=2048))
    local = ChatSettings(backend="scratch", precision="int8")
    on_endpoint = local.with_model("remote")
    assert (on_endpoint.backend, on_endpoint.base_url, on_endpoint.model, on_endpoint.api_key_env,
            on_endpoint.context_length, on_endpoint.precision) == (
        "openai", "http://127.0.0.1:9/v1", "llama3.2:3b", "MY_KEY", 2048, "auto")
    assert on_endpoint.with_model("qwen2.5:7b").model == "qwen2.5:7b"  # another model on the same server
    back = on_endpoint.with_model("tiny")
    assert (back.backend, back.model, back.base_url, back.api_key_env) == ("hf", "tiny", None, None)
    assert local.with_model("tiny").model == "tiny" and local.with_model("default").model is None
    stored = json.loads((hearth_home / "models.json").read_text())
    assert stored["remote"] == {"base_url": "http://127.0.0.1:9/v1", "model": "llama3.2:3b", "api_key_env": "MY_KEY",
                                "context_length": 2048}  # the variable's name, never a key


def test_add_refuses_what_would_not_run(tmp_path, tiny_llama_dir):
    with pytest.raises(HearthError, match="cannot be a model name"):
        named_models.add(NamedModel("default", path=str(tiny_llama_dir)))
    with pytest.raises(HearthError, match="does not exist"):
        named_models.add(NamedModel("gone", path=str(tmp_path / "gone")))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(HearthError, match="neither a model folder nor a GGUF file"):
        named_models.add(NamedModel("notes", path=str(tmp_path / "notes.txt")))
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(HearthError, match="LoRA adapter"):
        named_models.add(NamedModel("ad", path=str(tmp_path / "adapter")))
    named_models.add(NamedModel("tiny", path=str(tiny_llama_dir)))
    with pytest.raises(HearthError, match="exists"):
        named_models.add(NamedModel("tiny", path=str(tiny_llama_dir)))
    with pytest.raises(HearthError, match="no model named"):
        named_models.remove("nothing")
