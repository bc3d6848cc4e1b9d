"""Snapshot tests of the main screens (SVGs under __snapshots__; update with --snapshot-update)."""

import pytest

from assistant.records import Conversation, Message
from assistant.store import Store
from backends.hf.backend import HFBackend
from tui.app import HearthApp

SIZE = (110, 34)


@pytest.fixture
def app(tmp_path, tiny_llama_dir):
    store = Store(tmp_path / "h.db")
    conv = store.create_conversation(Conversation(title="Tomato care", system_prompt="Be brief."))
    store.add_message(conv.id, Message(role="user", content="How much sun do tomatoes need?"))
    store.add_message(conv.id, Message(
        role="assistant", status="stop", backend="hf", model="tiny-model",
        content="Tomatoes need six to eight hours of sun per day. [1] They are from Mars.",
        sources=[{"rank": 1, "score": 1.0, "path": "notes/garden.md", "line": 5, "page": None,
                  "heading": "Garden > Tomatoes", "text": "Tomatoes need six to eight hours of direct sunlight.",
                  "chunk_id": 1}],
        checks={"score": 0.55, "sentences": [
            {"text": "Tomatoes need six to eight hours of sun per day. [1]", "start": 0, "end": 52,
             "score": 0.9, "verdict": "supported", "evidence": [1]},
            {"text": "They are from Mars.", "start": 53, "end": 72, "score": 0.2, "verdict": "unsupported",
             "evidence": []}]}))
    model = tmp_path / "tiny-model"
    model.symlink_to(tiny_llama_dir)
    backend = HFBackend(model)
    return HearthApp(store=store, loader=lambda settings: backend, conversation_id=conv.id)


async def _loaded(pilot):
    for _ in range(100):
        if pilot.app.session is not None:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)


def test_main_screen_with_grounded_answer(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=_loaded)


def test_help_screen(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, press=["f1"], run_before=_loaded)
