"""`--file`: answers grounded in files without a collection, cited like collection sources, and the
files stored with the conversation."""

import json

import pytest

from assistant.store import Store
from tests.helpers import build_tiny_llama, hearth


@pytest.fixture(scope="module")
def long_context_llama(tmp_path_factory):
    """The tiny model with room for a grounded prompt (its tokenizer spends a token on every few bytes)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-2k"), context=2048)


def ask(model, *args, check=True):
    return hearth("ask", "--backend", "scratch", "--model", model, "--max-tokens", "4", "--json", *args, check=check)


def test_ask_with_files_cites_them_and_the_conversation_keeps_them(long_context_llama, tmp_path):
    notes = tmp_path / "garden.md"
    notes.write_text("# Garden\n\nTomatoes need six hours of sun.\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01" * 40)
    run = ask(long_context_llama, "--file", notes, "--file", tmp_path / "blob.bin", "How much sun do tomatoes need?")
    answer = json.loads(run.stdout)
    assert [s["path"] for s in answer["sources"]] == [str(notes)]
    # (whether it is checked depends on the random model's reply having any text; the check of grounded
    # answers is tested with real replies in tests/assistant/test_grounding_answers.py)
    assert f"skipped {tmp_path / 'blob.bin'}: binary file" in run.stderr
    conversation = Store().get_conversation(answer["conversation_id"])
    attached = [str(notes), str(tmp_path / "blob.bin")]  # as given: the skipped one is said again when continued
    assert conversation.settings["attachments"] == attached and conversation.settings["collection"] is None

    again = json.loads(ask(long_context_llama, "--conversation", answer["conversation_id"], "And peppers?").stdout)
    assert [s["path"] for s in again["sources"]] == [str(notes)]  # the files are read again


def test_files_and_a_collection_together_or_nothing_readable_are_one_line_errors(long_context_llama, tmp_path):
    notes = tmp_path / "garden.md"
    notes.write_text("Tomatoes need sun.\n")
    both = ask(long_context_llama, "--file", notes, "--docs", "notes", "Q?", check=False)
    assert both.returncode == 1 and "not both" in both.stderr
    (tmp_path / "empty.txt").write_text("")
    nothing = ask(long_context_llama, "--file", tmp_path / "empty.txt", "Q?", check=False)
    assert nothing.returncode == 1
    assert nothing.stderr.strip().splitlines()[-1] == "hearth: error: none of the attached files could be read"
