"""Every `hearth chat` option reaches the full-screen chat's session (built as `hearth chat` builds it)."""

import argparse

import pytest

from assistant.cli import build_parser
from assistant.cli.chat import chat_app
from assistant.records import Conversation, Message
from assistant.store import Store
from retrieval.collection import Collection
from tests.tui.pilot import SIZE, ready, say

NOTES = "# Garden notes\n\nTomatoes need six to eight hours of direct sunlight per day.\n"

# option values -> what the opened session must show; {adapter} and {conversation} are filled in per test
CASES = {
    "backend+precision int8": (["--backend", "scratch", "--precision", "int8"],
                               lambda app: (app.backend.name, app.backend.precision,
                                            app.session.settings.precision) == ("scratch", "int8", "int8")),
    "precision bf16": (["--backend", "scratch", "--precision", "bf16"],
                       lambda app: app.backend.precision == "bf16"),
    "model": ([], lambda app: app.backend.model_id == app.session.settings.model),
    "adapter": (["--adapter", "{adapter}"], lambda app: app.backend.adapter == app.session.settings.adapter),
    "system": (["--system", "Be terse."], lambda app: app.session.settings.system_prompt == "Be terse."),
    "temperature": (["--temperature", "0.5"], lambda app: app.session.settings.sampling.temperature == 0.5),
    "top-k": (["--top-k", "7"], lambda app: app.session.settings.sampling.top_k == 7),
    "top-p": (["--top-p", "0.8"], lambda app: app.session.settings.sampling.top_p == 0.8),
    "repetition-penalty": (["--repetition-penalty", "1.3"],
                           lambda app: app.session.settings.sampling.repetition_penalty == 1.3),
    "seed": (["--seed", "5"], lambda app: app.session.settings.sampling.seed == 5),
    "max-tokens": (["--max-tokens", "9"], lambda app: app.session.settings.max_new_tokens == 9),
    "docs": (["--docs", "notes"], lambda app: app.session.collection.name == "notes"),
    "sources": (["--docs", "notes", "-k", "2"], lambda app: app.session.settings.k == 2),
    "file": (["--file", "{notes_file}"], lambda app: app.session.collection.name == "attached"
             and app.session.settings.attachments == (str(app.session.collection.roots[0]),)),
    "on-unsupported": (["--on-unsupported", "abstain"], lambda app: app.session.settings.on_unsupported == "abstain"),
    "check": (["--check"], lambda app: app.session.settings.check is True),
    "self-check": (["--self-check", "2"], lambda app: app.session.settings.self_check == 2),
    "no-grounded-adapter": (["--no-grounded-adapter"], lambda app: app.session.settings.grounded_adapter is False),
    "openai endpoint": (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "served-model",
                         "--api-key-env", "HEARTH_TEST_KEY", "--context-length", "1000"],
                        lambda app: (app.backend.name, app.backend.model_id, app.backend.base_url,
                                     app.backend.context_length, app.session.settings.api_key_env)
                        == ("openai", "served-model", "http://127.0.0.1:9/v1", 1000, "HEARTH_TEST_KEY")),
    "conversation": (["--conversation", "{conversation}"],
                     lambda app: [m.content for m in app.session.messages] == ["kept question", "kept answer"]),
}


def chat_options() -> set[str]:
    chat = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["chat"]
    return {a.option_strings[-1] for a in chat._actions if a.option_strings} - {"--help", "--plain"}


def test_the_cases_cover_every_chat_option():
    given = {arg for args, _ in CASES.values() for arg in args if arg.startswith("-")} | {"--model"}
    assert {"--sources" if o == "-k" else o for o in given} == chat_options()


@pytest.fixture
def adapter(tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backends.hf.peft_quiet import quiet_peft

    with quiet_peft():
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                               LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


@pytest.fixture
def notes(tmp_path, embedder):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "garden.md").write_text(NOTES)
    Collection("notes", embedder=embedder).ingest([tmp_path / "notes"])


@pytest.mark.parametrize("case", CASES)
async def test_a_chat_option_reaches_the_session(case, tiny_llama_dir, adapter, notes, hearth_home, tmp_path,
                                                 monkeypatch):
    monkeypatch.setenv("HEARTH_TEST_KEY", "k")  # (with --context-length given, nothing connects at load)
    store = Store()
    conv = store.create_conversation(Conversation(title="kept", system_prompt="s"))
    store.add_message(conv.id, Message(role="user", content="kept question"))
    store.add_message(conv.id, Message(role="assistant", content="kept answer", status="stop"))
    options, holds = CASES[case]
    options = [o.format(adapter=adapter, conversation=conv.id, notes_file=tmp_path / "notes" / "garden.md")
               for o in options]
    app = chat_app(build_parser().parse_args(["chat", "--model", str(tiny_llama_dir), *options]), store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert holds(app), (case, app.session.settings, app.backend)
        if "--conversation" in options:
            assert app.session.conversation_id == conv.id


@pytest.mark.slow
async def test_the_first_answer_of_a_chat_opened_with_docs_cites_its_sources(notes, smollm2_dir, tiny_llama_dir):
    from backends.tokenizer import ChatTokenizer
    from tests.helpers import ScriptedBackend

    store = Store()
    backend = ScriptedBackend(ChatTokenizer.from_file(smollm2_dir), ["Tomatoes need six to eight hours of sunlight."])
    app = chat_app(build_parser().parse_args(["chat", "--docs", "notes"]), store)
    app.loader = lambda settings: backend
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "How much sun do tomatoes need?")
        reply = store.messages(app.conversation_id)[-1]
        assert "Document [1]" in backend.prompts[0] and NOTES.splitlines()[2] in backend.prompts[0]
        assert reply.content.endswith("[1]") and reply.sources[0]["path"].endswith("garden.md")
        assert "[1] " in str(app.query("MessageBox").last().footer.render())
