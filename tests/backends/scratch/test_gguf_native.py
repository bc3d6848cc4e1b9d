"""A GGUF file run as it is on the scratch engine (precision gguf): a tiny qwen2-architecture file in
mixed block types, written in the test, answers through ask, ask --docs, chat --plain and serve;
its logits follow its dequantised weights; a llama file's rotary layout is read right; a damaged
file is a clear error naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import openai
import pytest
import torch

from assistant.errors import ModelNotFound
from backends.scratch import kernels
from tests.helpers import build_tiny_llama_gguf, build_tiny_qwen2_gguf, hearth

pytestmark = pytest.mark.skipif(kernels.load() is None, reason=f"kernels not built: {kernels.why_not()}")
PROMPT = [1, 504, 3458, 314, 4649, 30, 2]


@pytest.fixture(scope="module")
def qwen_gguf(tmp_path_factory) -> Path:
    return build_tiny_qwen2_gguf(tmp_path_factory.mktemp("qwen") / "tiny-qwen2.gguf")


@pytest.fixture(scope="module")
def backend(qwen_gguf, models_home):
    from backends.scratch.backend import ScratchBackend

    os.environ["HEARTH_HOME"] = str(models_home)
    return ScratchBackend(qwen_gguf)


def test_the_file_runs_from_its_own_blocks_with_its_metadata(backend):
    from backends.scratch.gguf_native import GGUFLinear

    model = backend.engine.model
    assert backend.precision == "gguf" and backend.engine.native is not None
    config = model.config
    assert (config.attn_bias, config.tie_embeddings, config.rope_theta, config.rope_pairing) == (True, True, 1e6, "half")
    assert all(isinstance(layer, GGUFLinear) for b in model.blocks for layer in (b.attention.W_QKV, b.mlp.W_2))
    # no float copy of a block tensor: every block part's bytes are the mapped file's
    mapped = model.gguf._bytes
    raw = model.gguf.raw("blk.0.attn_q.weight")
    assert raw.numpy().base is not None and raw.data_ptr() >= mapped.ctypes.data
    assert backend.tokenizer.im_end_id in backend.tokenizer.stop_ids  # ChatML from the file's template


def test_logits_follow_the_dequantised_weights(backend):
    from backends.scratch.gguf_native import load_dequantized_model

    reference = load_dequantized_model(backend.engine.model.gguf)
    with torch.inference_mode():
        expected = reference(torch.tensor([PROMPT]))[0]
        forward = backend.engine.model(torch.tensor([PROMPT]))[0]
    backend.engine.reset()
    native = backend.engine.native.forward(PROMPT, 0)
    backend.engine.reset()
    # the kernels round activations to 8 bits per block of 32; the float model does not
    assert (forward - expected).abs().max() <= 0.03 * expected.abs().max()
    assert torch.equal(forward.argmax(-1), expected.argmax(-1))
    assert torch.allclose(native, forward, atol=1e-5)  # the one-call decoder and the module forward agree


def test_decode_steps_equal_a_verify_of_the_same_rows(backend):
    engine = backend.engine
    engine.reset()
    engine.prefill(PROMPT)
    steps = [engine.step(torch.tensor([t]), t) for t in (11, 12, 13)]
    engine.drop(3)
    verified = engine.verify([11, 12, 13])
    engine.reset()
    assert torch.equal(torch.stack(steps), verified)  # what prompt-lookup speculation relies on


def test_ask_chat_and_documents_with_the_file(qwen_gguf, tmp_path):
    run = hearth("ask", "--backend", "scratch", "--model", qwen_gguf, "--max-tokens", "5", "--temperature", "0",
                 "--json", "Hello")
    reply = json.loads(run.stdout)
    assert (reply["precision"], reply["model"], reply["timings"]["completion_tokens"]) == ("gguf", str(qwen_gguf), 5)
    again = json.loads(hearth("ask", "--backend", "scratch", "--model", qwen_gguf, "--max-tokens", "5",
                              "--temperature", "0", "--json", "Hello").stdout)
    assert again["answer"] == reply["answer"]  # greedy: the same tokens
    plain = hearth("chat", "--plain", "--backend", "scratch", "--model", qwen_gguf, "--max-tokens", "3",
                   stdin="Hi there\n/quit\n")
    assert plain.returncode == 0
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "garden.md").write_text("# Garden\n\nTomatoes need six hours of sun a day.\n")
    hearth("ingest", notes, "--collection", "garden")
    grounded = json.loads(hearth("ask", "--backend", "scratch", "--model", qwen_gguf, "--docs", "garden",
                                 "--max-tokens", "6", "--json", "How much sun do tomatoes need?").stdout)
    assert grounded["precision"] == "gguf" and grounded["sources"][0]["path"].endswith("garden.md")


def test_serve_runs_the_file_with_continuous_batching(qwen_gguf, hearth_home):
    from assistant.server.process import ServerProcess

    with ServerProcess("--backend", "scratch", "--model", str(qwen_gguf), "--parallel", "2",
                       env=os.environ | {"HEARTH_HOME": str(hearth_home)}) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="hearth", messages=[{"role": "user", "content": "Hi"}],
                                               temperature=0, max_tokens=4)
        assert reply.usage.completion_tokens == 4
        chunks = list(client.chat.completions.create(model="hearth", messages=[{"role": "user", "content": "Hi"}],
                                                     temperature=0, max_tokens=4, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content


def test_a_llama_file_keeps_its_rotary_layout(tmp_path, smollm2_dir):
    from backends.hf.backend import HFBackend
    from backends.scratch.backend import ScratchBackend

    reference, gguf = build_tiny_llama_gguf(tmp_path / "reference", tmp_path / "tiny.gguf", smollm2_dir)
    native = ScratchBackend(gguf)
    assert native.precision == "gguf" and native.engine.model.config.rope_pairing == "interleaved"
    with torch.inference_mode():
        got = native.engine.model(torch.tensor([PROMPT]))[0]  # F32 tensors: dense parts, no rounding
    assert torch.allclose(got, HFBackend(reference).logits(PROMPT), atol=1e-4)


def test_a_damaged_or_truncated_file_is_a_clear_error(qwen_gguf, tmp_path):
    from backends.scratch.backend import ScratchBackend

    data = qwen_gguf.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) - 4096])
    with pytest.raises(ModelNotFound, match="truncated.gguf"):
        ScratchBackend(truncated)
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(data[:64] + b"\xff" * 4096)
    run = hearth("ask", "--backend", "scratch", "--model", damaged, "Hi", check=False)
    assert run.returncode == 1 and "damaged.gguf" in run.stderr and "Traceback" not in run.stderr
    with pytest.raises(Exception, match="precision gguf runs a .gguf file"):
        ScratchBackend(tmp_path, precision="gguf")
