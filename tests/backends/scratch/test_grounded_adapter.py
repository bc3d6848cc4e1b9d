"""The scratch backend's grounded answers go through the shipped grounded-answer adapter, merged."""

import pytest
import torch

from assistant import chatml, rag
from backends.base import GenerationParams
from backends.hf.default_model import bundled_gguf, grounded_adapter_dir
from backends.params import GREEDY

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(grounded_adapter_dir() is None, reason="no grounded-answer adapter ships")]

NOTE = "Our cat is called Miso. She sleeps on the windowsill in the kitchen. Miso was born in March 2019."


def _grounded_prompt(tokenizer, embedder, question="Where does Miso sleep?"):
    """The prompt the chat sends the adapter: the note cut to the sentences closest to the question."""
    sources = [rag.Source(1, 0, "notes/cat.md", 1, None, "", NOTE, 1.0)]
    sources = rag.focused(sources, question, embedder.encode([question])[0], embedder, rag.ADAPTER_FOCUS)
    system, turn = rag.grounded_messages(question, sources)
    return chatml.encode([{"role": m.role, "content": m.content} for m in (system, *turn)], tokenizer,
                         add_generation_prompt=True).ids


def test_the_merged_weights_give_the_adapters_logits(smollm2_dir, embedder):
    # Our model with the adapter merged (peft's merge) against transformers running base + adapter.
    from backends.hf.backend import HFBackend
    from backends.scratch.weights import load_model

    hf = HFBackend(smollm2_dir, grounded_adapter=grounded_adapter_dir())
    ids = torch.tensor([_grounded_prompt(hf.tokenizer, embedder)])
    ours = load_model(smollm2_dir, grounded_adapter_dir())
    plain = load_model(smollm2_dir)
    with torch.no_grad():
        theirs = hf.model(ids).logits[0, -8:]
        merged, base = ours(ids)[0, -8:], plain(ids)[0, -8:]
    assert float((merged - theirs).abs().max()) < 1e-3
    assert float((base - theirs).abs().max()) > 0.1  # the adapter does change them


def test_q4_keeps_the_files_blocks_where_the_adapter_left_the_weights_alone(smollm2_dir):
    import json

    from backends.scratch.quantize import quantize_blocks
    from backends.scratch.weights import load_model

    model, from_file = quantize_blocks(load_model(smollm2_dir, grounded_adapter_dir()).fuse_for_inference(), "q4",
                                       bundled_gguf())
    config = json.loads((grounded_adapter_dir() / "adapter_config.json").read_text())
    adapted_blocks = set(config["layers_to_transform"])
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}  # what the kinds below assume
    for i, block in enumerate(model.blocks):
        attention = "q8" if i in adapted_blocks else "q4"
        kinds = [block.attention.W_QKV.kind, block.attention.W_O.kind, block.mlp.W_13.kind, block.mlp.W_2.kind]
        assert kinds == [attention, attention, "q4", "q4"], i
    # from the file: 7 projections per block the adapter did not touch, 3 (the MLP's) per block it
    # did, and the output projection
    assert from_file == 7 * (len(model.blocks) - len(adapted_blocks)) + 3 * len(adapted_blocks) + 1


def test_grounded_answers_use_the_adapter_and_plain_chat_the_base(smollm2_dir, embedder):
    from backends.registry import load_backend

    backend = load_backend("scratch", precision="q4")
    assert backend.grounded_adapter == str(grounded_adapter_dir())
    ids = _grounded_prompt(backend.tokenizer, embedder)
    params = GenerationParams(GREEDY, 40, grounded=True)
    grounded = [s.token_id for s in backend.stream(ids, params)]
    plain = [s.token_id for s in backend.stream(ids, GenerationParams(GREEDY, 40))]
    # the adapter's engine, without speculation, gives the tokens the backend streamed with it
    engine = backend.grounded_engine()
    engine.reset()
    assert [s.token_id for s in engine.generate(ids, params, backend.tokenizer.stop_ids)] == grounded
    backend.engine.reset()
    assert [s.token_id for s in backend.engine.generate(ids, GenerationParams(GREEDY, 40),
                                                        backend.tokenizer.stop_ids)] == plain
    assert grounded != plain
    assert "windowsill" in backend.tokenizer.decode(grounded)


def test_the_grounded_adapter_can_be_turned_off_for_scratch(smollm2_dir):
    from backends.registry import load_backend

    assert load_backend("scratch", model=smollm2_dir, precision="q4").grounded_adapter is None


def test_served_with_batching_grounded_answers_still_use_the_adapter(smollm2_dir, embedder):
    # `hearth serve --backend scratch` wraps the backend in BatchedBackend; grounded answers must
    # not fall back to the base model there.
    from backends.registry import load_backend
    from backends.scratch.batch import BatchedBackend

    backend = load_backend("scratch")
    ids = _grounded_prompt(backend.tokenizer, embedder)
    grounded, plain = GenerationParams(GREEDY, 40, grounded=True), GenerationParams(GREEDY, 40)
    alone = [[s.token_id for s in backend.stream(ids, params)] for params in (grounded, plain)]
    batched = BatchedBackend(backend, slots=2)
    try:
        assert batched.grounded_adapter == str(grounded_adapter_dir())
        served = [[s.token_id for s in batched.stream(ids, params)] for params in (grounded, plain)]
        assert served == alone
        assert served[0] != served[1]
        assert "windowsill" in backend.tokenizer.decode(served[0])
        assert (batched.active, batched.queued) == (0, 0)
        assert batched.occupancy == 1.0  # one at a time, on either engine: every step decoded one sequence
    finally:
        batched.close()


def test_a_chat_with_documents_merges_the_adapter_before_the_first_question(smollm2_dir, tmp_path):
    from assistant.conversation import ChatSession, open_sources
    from assistant.settings import ChatSettings
    from backends.registry import load_backend

    backend = load_backend("scratch")
    ChatSession(backend, ChatSettings())  # no documents: nothing to prepare
    off = ChatSettings(attachments=(str(tmp_path / "cat.md"),), grounded_adapter=False)
    (tmp_path / "cat.md").write_text(NOTE)
    ChatSession(backend, off, collection=open_sources(off))
    assert backend._preparing is None
    on = off.replace(grounded_adapter=True)
    ChatSession(backend, on, collection=open_sources(on))
    backend._preparing.join(timeout=120)
    assert backend._grounded_engine is not None
    assert backend.prepare_grounded() is None  # once
