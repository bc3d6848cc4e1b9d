"""The openai backend against real OpenAI-compatible servers on loopback: `hearth serve` for
replies, streaming, cancel and grounded answers; a small FastAPI server written here for every
failure a remote endpoint can have."""

import asyncio
import json
import os
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from assistant.conversation import DoneEvent, TokenEvent, open_session
from assistant.errors import HearthError
from assistant.server.process import ServerProcess
from assistant.settings import ChatSettings
from assistant.store import Store
from backends import remote
from backends.params import GREEDY
from tests.helpers import hearth


def chunk(text=None, finish=None):
    delta = {"content": text} if text is not None else {}
    return "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"


class Fake:
    """A minimal OpenAI-compatible server whose next reply is chosen by the test (`mode`)."""

    def __init__(self):
        self.mode = "ok"
        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x",
                                                "meta": {"n_ctx_train": 2048}}, {"id": "other", "object": "model",
                                                                                  "created": 0, "owned_by": "x"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            mode = self.mode
            if mode == "401":
                return JSONResponse({"error": {"message": "bad key", "type": "auth", "param": None, "code": None}}, 401)
            if mode == "404" or body["model"] != "m":
                return JSONResponse({"error": {"message": "no such model", "type": "x", "param": None,
                                               "code": None}}, 404)
            if mode == "429":
                return JSONResponse({"error": {"message": "slow down", "type": "x", "param": None, "code": None}}, 429)
            if mode == "500":
                return JSONResponse({"error": {"message": "out of memory", "type": "x", "param": None,
                                               "code": None}}, 500)

            async def events():
                yield chunk("Hello")
                yield chunk(" there")
                if mode == "broken":
                    raise RuntimeError("the server died mid-reply")
                if mode == "malformed":
                    yield "data: {not json\n\n"
                if mode == "slow":
                    await asyncio.sleep(5)
                yield chunk(".", "stop")
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def fake():
    server = Fake()
    yield server
    server.stop()


def reply(session, text="hi"):
    events = list(session.send(text))
    done = events[-1]
    assert isinstance(done, DoneEvent)
    return "".join(e.text for e in events if isinstance(e, TokenEvent)), done


def test_every_failure_is_one_line_naming_the_url_and_the_chat_goes_on(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "READ_TIMEOUT_S", 1.0)
    store = Store(tmp_path / "h.db")
    settings = ChatSettings(backend="openai", base_url=fake.url, model="m", sampling=GREEDY)
    session = open_session(settings, store)
    assert session.backend.context_length == 2048  # what the server reports (llama.cpp's field)
    expected = {
        "401": "refused the API key (401)", "404": "no model 'm' there (404); it has: m, other",
        "429": "(429)", "500": "the server failed (500): out of memory", "broken": "the reply stream broke",
        "malformed": "malformed event", "slow": "timed out",
    }
    for mode, words in expected.items():
        fake.mode = mode
        text, done = reply(session)
        assert done.finish_reason == "error" and fake.url in done.error and words in done.error, (mode, done.error)
        assert "\n" not in done.error
        if mode in ("broken", "malformed", "slow"):
            assert done.message.content == "Hello there" and done.message.status == "error"  # the partial reply kept
        fake.mode = "ok"
        text, done = reply(session)  # usable after each
        assert (text, done.finish_reason) == ("Hello there.", "stop")
    stored = store.messages(session.conversation_id)
    assert stored[-1].backend == "openai" and stored[-1].model == "m" and stored[-1].settings["base_url"] == fake.url


def test_unreachable_server_and_bad_options(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(HearthError, match=rf"127.0.0.1:{port}/v1: cannot connect \(connection refused\)"):
        open_session(ChatSettings(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", model="m"))
    with pytest.raises(HearthError, match="needs --base-url"):
        ChatSettings(backend="openai")
    with pytest.raises(HearthError, match="apply to --backend openai"):
        ChatSettings(base_url="http://127.0.0.1:1/v1")
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(HearthError, match="NO_SUCH_KEY_VAR"):
        open_session(ChatSettings(backend="openai", base_url="http://127.0.0.1:1/v1", model="m",
                                  api_key_env="NO_SUCH_KEY_VAR", context_length=100))


@pytest.mark.slow
def test_ask_through_hearth_serve_answers_grounded_and_cancels(smollm2_dir, models_home, tmp_path, hearth_home):
    served_home = tmp_path / "served-home"
    served_home.mkdir()
    (served_home / "models").symlink_to(models_home / "models")
    with ServerProcess("--backend", "scratch", "--parallel", "2",
                       env=os.environ | {"HEARTH_HOME": str(served_home)}) as server:
        connected = []
        guarded = socket.socket.connect

        def recording(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                connected.append(address[:2])
            return guarded(sock, address)

        socket.socket.connect = recording
        try:
            out = hearth("ask", "--backend", "openai", "--base-url", server.url, "--model", "hearth",
                         "--temperature", "0", "--json", "What is the capital of France?")
        finally:
            socket.socket.connect = guarded
        answer = json.loads(out.stdout)
        assert "Paris" in answer["answer"] and (answer["backend"], answer["model"]) == ("openai", "hearth")
        [stored] = Store().messages(answer["conversation_id"])[1:]
        assert stored.settings["base_url"] == server.url
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        assert connected and set(connected) == {("127.0.0.1", port)}  # the URL it was given, and nothing else

        hearth("models", "add", "served", "--base-url", server.url, "--model", "hearth")
        [row] = [r for r in json.loads(hearth("models", "list", "--json").stdout) if r["name"] == "served"]
        assert "hearth" in row["served"]
        named = json.loads(hearth("ask", "--model", "served", "--temperature", "0", "--max-tokens", "8", "--json",
                                  "What is the capital of France?").stdout)
        assert (named["backend"], named["model"]) == ("openai", "hearth")

        notes = tmp_path / "notes"
        notes.mkdir()
        (notes / "garden.md").write_text("# Garden\n\nTomatoes need six hours of sun a day.\n")
        hearth("ingest", notes, "--collection", "garden")  # the client's own collection
        grounded = json.loads(hearth("ask", "--backend", "openai", "--base-url", server.url, "--model", "hearth",
                                     "--docs", "garden", "--json", "How many hours of sun do tomatoes need?").stdout)
        assert grounded["sources"][0]["path"] == str(notes / "garden.md") and grounded["checks"]["sentences"]

        session = open_session(ChatSettings(backend="openai", base_url=server.url, model="hearth"), None)
        assert session.backend.context_length == 8192  # reported by hearth serve
        cancel = threading.Event()
        events = session.send("Tell me a very long story about a lighthouse.", cancel)
        for event in events:
            if isinstance(event, TokenEvent) and event.text:
                cancel.set()
            if isinstance(event, DoneEvent):
                assert event.finish_reason == "cancelled" and event.message.status == "cancelled"
