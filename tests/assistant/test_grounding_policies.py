"""What happens to a grounded answer the check does not support: annotate, regenerate, abstain."""

import pytest

from assistant import rag
from assistant.conversation import ChatSession, DoneEvent
from assistant.settings import ChatSettings
from assistant.store import Store
from retrieval.collection import Collection
from tests.helpers import ScriptedBackend

FACTS = "Our cat Miso was born in March 2019. She likes tuna and sleeps on the bookshelf.\n"
MADE_UP = "Miso was born in Paris in 1987 and won the national agility championship twice."
FAITHFUL = "Miso was born in March 2019 and she likes tuna."


@pytest.fixture
def cats(tmp_path, embedder):
    folder = tmp_path / "cats"
    folder.mkdir()
    (folder / "cat.txt").write_text(FACTS)
    collection = Collection("cats", embedder=embedder)
    collection.ingest([folder])
    return collection


def reply(session, question="When was Miso born?"):
    return [e for e in session.send(question) if isinstance(e, DoneEvent)][0].message


def test_annotate_keeps_the_answer_and_marks_it(cats, smollm2_backend):
    backend = ScriptedBackend(smollm2_backend.tokenizer, [MADE_UP])
    message = reply(ChatSession(backend, ChatSettings(collection="cats"), collection=cats))
    assert message.content.startswith(MADE_UP.rstrip("."))
    assert message.checks["score"] < 0.5
    assert [s["verdict"] for s in message.checks["sentences"]] == ["unsupported"]


def test_a_grounded_answer_is_checked_as_a_question_answer(cats, smollm2_backend, embedder):
    from assistant.grounding import check

    backend = ScriptedBackend(smollm2_backend.tokenizer, [FAITHFUL])
    message = reply(ChatSession(backend, ChatSettings(collection="cats"), collection=cats))
    sources = [(s["chunk_id"], s["text"]) for s in message.sources]
    as_question = check(FAITHFUL, sources, embedder, question="When was Miso born?", kind="question").score
    as_general = check(FAITHFUL, sources, embedder, question="When was Miso born?").score
    assert message.checks["score"] == as_question != as_general


def test_abstain_replaces_an_unsupported_answer_and_keeps_the_sources(cats, smollm2_backend):
    backend = ScriptedBackend(smollm2_backend.tokenizer, [MADE_UP])
    message = reply(ChatSession(backend, ChatSettings(collection="cats", on_unsupported="abstain"), collection=cats))
    assert message.content == rag.ABSTAIN
    assert message.sources and message.sources[0]["path"].endswith("cat.txt")
    assert message.checks["policy"] == "abstain" and message.checks["replaced"] == MADE_UP


def test_abstain_leaves_a_supported_answer_alone(cats, smollm2_backend):
    backend = ScriptedBackend(smollm2_backend.tokenizer, [FAITHFUL])
    message = reply(ChatSession(backend, ChatSettings(collection="cats", on_unsupported="abstain"), collection=cats))
    assert message.content.startswith(FAITHFUL.rstrip("."))
    assert message.checks["score"] >= 0.5 and "policy" not in message.checks


def test_regenerate_retries_once_with_a_stricter_prompt_and_keeps_the_better(cats, smollm2_backend):
    backend = ScriptedBackend(smollm2_backend.tokenizer, [MADE_UP, FAITHFUL])
    message = reply(ChatSession(backend, ChatSettings(collection="cats", on_unsupported="regenerate"), collection=cats))
    assert len(backend.prompts) == 2
    assert rag.STRICT_NOTE.strip() not in backend.prompts[0] and rag.STRICT_NOTE.strip() in backend.prompts[1]
    assert message.content.startswith(FAITHFUL.rstrip("."))
    assert message.checks["retried"] is True


def test_regenerate_keeps_the_first_answer_when_the_retry_is_empty(cats, smollm2_backend):
    backend = ScriptedBackend(smollm2_backend.tokenizer, [MADE_UP, ""])
    message = reply(ChatSession(backend, ChatSettings(collection="cats", on_unsupported="regenerate"), collection=cats))
    assert len(backend.prompts) == 2 and message.content.startswith(MADE_UP.rstrip("."))
    assert message.checks["score"] < 0.5


def test_unknown_policy_is_refused():
    from assistant.errors import HearthError

    with pytest.raises(HearthError, match="unknown policy 'ignore'"):
        ChatSettings(on_unsupported="ignore")


def test_answers_without_documents_are_checked_only_when_asked(smollm2_backend):
    plain = reply(ChatSession(ScriptedBackend(smollm2_backend.tokenizer, [MADE_UP])), "Tell me about Miso.")
    assert plain.checks is None
    session = ChatSession(ScriptedBackend(smollm2_backend.tokenizer, [MADE_UP]), ChatSettings(check=True))
    checked = reply(session, "My cat Miso was born in Paris in 1987. Tell me about Miso.")
    (sentence,) = checked.checks["sentences"]
    assert sentence["evidence"] == [0]  # the user's message
    assert checked.checks["score"] is not None


def test_stored_checks_round_trip(cats, smollm2_backend, hearth_home):
    store = Store()
    session = ChatSession(ScriptedBackend(smollm2_backend.tokenizer, [FAITHFUL + " " + MADE_UP]),
                          ChatSettings(collection="cats"), store=store, collection=cats)
    message = reply(session)
    stored = store.messages(session.conversation_id)[-1]
    assert stored.checks == message.checks and len(stored.checks["sentences"]) == 2
    assert stored.content == message.content
    for s in stored.checks["sentences"]:
        assert stored.content[s["start"] : s["end"]] == s["text"]
