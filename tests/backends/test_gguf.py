"""`--model FILE.gguf`: a GGUF file written in the test is converted once (by content) and loads on
both backends with the same logits as the same weights loaded from safetensors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from backends import registry
from tests.helpers import build_tiny_llama_gguf, hearth

PROMPT = [1, 504, 3458, 314, 4649, 30, 2]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, smollm2_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gguf")
    return build_tiny_llama_gguf(root / "reference", root / "tiny.gguf", smollm2_dir)


def test_a_gguf_file_loads_with_the_logits_of_its_weights(tiny_gguf):
    from backends.hf.backend import HFBackend
    from backends.scratch.weights import load_model

    reference, gguf = tiny_gguf
    said = []
    folder = registry.resolve_model(str(gguf), report=said.append)
    assert any("Converting tiny.gguf" in line for line in said)
    expected = HFBackend(reference).logits(PROMPT)
    assert torch.allclose(HFBackend(folder).logits(PROMPT), expected, atol=1e-5)
    scratch = load_model(folder).eval()
    with torch.no_grad():
        assert torch.allclose(scratch(torch.tensor([PROMPT]))[0].float(), expected, atol=1e-4)
    # the chat template the file carries came along: SmolLM2's, which renders ChatML
    from backends.tokenizer import ChatTokenizer
    assert ChatTokenizer.from_file(folder).template is None and (folder / "chat_template.jinja").is_file()


def test_a_gguf_file_is_converted_once_by_its_content(tiny_gguf, tmp_path):
    _, gguf = tiny_gguf
    first = registry.resolve_model(str(gguf))
    said = []
    assert registry.resolve_model(str(gguf), report=said.append) == first and said == []  # cached, not re-read
    renamed = shutil.copyfile(gguf, tmp_path / "renamed.gguf")
    assert registry.resolve_model(str(renamed), report=said.append) == first
    assert not any("Converting" in line for line in said)  # same content: not converted again
    renamed.write_bytes(b"GGUF" + b"\0" * 12)  # the same path, new content: read again, not the cached model
    with pytest.raises(Exception, match="cannot read the GGUF file"):
        registry.resolve_model(str(renamed))


def test_ask_answers_with_a_gguf_file_and_a_name_for_it(tiny_gguf):
    _, gguf = tiny_gguf
    run = hearth("ask", "--model", gguf, "--max-tokens", "4", "--json", "What is the capital of France?")
    reply = json.loads(run.stdout)
    assert reply["model"] == str(gguf)
    hearth("models", "add", "tiny", gguf)
    rows = json.loads(hearth("models", "list", "--json").stdout)
    assert {"name": "tiny", "kind": "gguf", "path": str(gguf.resolve())} in rows
    assert any(r["kind"] == "converted gguf" and r["gguf"] == str(gguf.resolve()) for r in rows)
    for backend in ("hf", "scratch"):
        run = hearth("ask", "--backend", backend, "--model", "tiny", "--max-tokens", "4", "--json", "Hi")
        assert json.loads(run.stdout)["model"] == "tiny"
    hearth("models", "remove", "tiny")
    missing = hearth("ask", "--model", "tiny", "Hi", check=False)
    assert missing.returncode == 1 and "model tiny does not exist" in missing.stderr
