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


def test_repl_answers_commands_itself_and_shows_a_grounded_replys_sources(tiny_tokenizer, tmp_path):
    from assistant.conversation import ChatSession, open_sources

    (tmp_path / "cat.md").write_text("Our cat is called Miso. She sleeps on the windowsill in the kitchen.\n")
    settings = ChatSettings(attachments=(str(tmp_path / "cat.md"),), check=False)
    session = ChatSession(ScriptedBackend(tiny_tokenizer, ["She sleeps on the windowsill [1]."]), settings,
                          collection=open_sources(settings))
    lines = iter(["/help", "/model other", "/etc/hosts", "Where does Miso sleep?", "/quit"])
    out: list[str] = []
    assert run_repl(session, read=lambda prompt: next(lines), write=out.append) == 0
    text = "".join(out)
    assert "Commands: /help, /quit" in text
    assert "unknown command /model." in text
    # only the last two lines reached the model: "/etc/hosts" is a path, not a command
    assert [m.content for m in session.messages if m.role == "user"] == ["/etc/hosts", "Where does Miso sleep?"]
    assert "[1] " in text and "cat.md (line 1)" in text
