"""`hearth chat --plain`: the line REPL over a real session and history file."""

from assistant.conversation import open_session
from assistant.repl import run_repl
from assistant.settings import ChatSettings
from assistant.store import Store
from tests.helpers import ScriptedBackend


def test_repl_streams_replies_and_stores_them(tiny_tokenizer, tmp_path):
    store = Store(tmp_path / "h.db")
    session = open_session(ChatSettings(), store, backend=ScriptedBackend(tiny_tokenizer, ["Paris.", "Berlin."]))
    lines = iter(["capital of France?", "", "capital of Germany?", "/quit"])
    out: list[str] = []
    assert run_repl(session, read=lambda prompt: next(lines), write=out.append) == 0
    text = "".join(out)
    assert text.startswith("Hearth (scripted: scripted). ")
    assert "hearth> Paris.\nhearth> Berlin.\n" in text
    assert [m.content for m in store.messages(session.conversation_id)] == [
        "capital of France?", "Paris.", "capital of Germany?", "Berlin."]
