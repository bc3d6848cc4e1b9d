"""`hearth serve` started as a user starts it, on a free loopback port, driven with the official
`openai` package and with raw HTTP for the error cases."""

import http.client
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import openai
import pytest

from assistant.server.process import ServerProcess
from tests.helpers import hearth

pytestmark = pytest.mark.slow
MODEL = "hearth"


@pytest.fixture(scope="module")
def home(tmp_path_factory, models_home, smollm2_dir):
    """A HEARTH_HOME with a document collection, the converted model linked in."""
    home = tmp_path_factory.mktemp("serve-home")
    (home / "models").symlink_to(models_home / "models")
    notes = tmp_path_factory.mktemp("notes")
    (notes / "garden.md").write_text("# Garden\n\nTomatoes need six hours of sun a day. Basil grows well next "
                                     "to tomatoes.\n")
    (notes / "bees.md").write_text("# Bees\n\nThe hive stands by the south wall. The bees visit the lavender "
                                   "in July.\n")
    hearth("ingest", notes, "--collection", "garden", home=home)
    return home


@pytest.fixture(scope="module")
def server(home):
    with ServerProcess("--backend", "scratch", "--parallel", "4", "--history",
                       env=os.environ | {"HEARTH_HOME": str(home)}) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)


def raw(server, method: str, path: str, body=None, headers=None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one plain HTTP request."""
    url = urlparse(server.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload) if payload else {}, dict(response.getheaders())


def ask(question: str, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0, **extra}


def metric(server, name: str, headers=None) -> float:
    url = urlparse(server.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("GET", "/metrics", headers=headers or {})
    text = conn.getresponse().read().decode()
    conn.close()
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def test_models_chat_and_stream_through_the_openai_package(server, client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL, "docs:garden", "all-MiniLM-L6-v2"]
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is the capital "
                                                                   "of France?"}], temperature=0, max_tokens=20)
    assert "Paris" in reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + \
        reply.usage.completion_tokens
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0,
        max_tokens=20, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content  # the same greedy reply, streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    cut = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
                                         max_completion_tokens=5, temperature=0)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5
    stopped = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is the capital "
                                             "of France?"}], temperature=0, max_tokens=20, stop=["France"])
    assert stopped.choices[0].message.content == "The capital of "


def test_concurrent_requests_get_the_replies_they_get_alone(server, client):
    questions = [("Name three fruits.", 24), ("What is 2 + 2?", 10), ("Describe the moon in two sentences.", 40),
                 ("Say hello in French.", 8)]

    def complete(question, n):
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                              temperature=0, max_tokens=n).choices[0].message.content

    alone = [complete(q, n) for q, n in questions]
    together: list = [None] * len(questions)
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, complete(*questions[i])))
               for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    assert metric(server, "hearth_batch_occupancy") > 1  # steps decoded several requests at once


def test_embeddings_are_the_bundled_embedders(server, client, embedder):
    import numpy as np

    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=["tomatoes need sun", "bees"])
    assert [d.index for d in result.data] == [0, 1]
    local = embedder.encode(["tomatoes need sun", "bees"])
    assert np.allclose(np.array([d.embedding for d in result.data]), local, atol=1e-5)
    status, body, _ = raw(server, "POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "x",
                                                             "encoding_format": "float"})
    assert status == 200 and len(body["data"][0]["embedding"]) == 384
    for alias in ("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"):  # as other tools name it
        assert np.allclose(client.embeddings.create(model=alias, input=["bees"]).data[0].embedding, local[1], atol=1e-5)
    status, body, _ = raw(server, "POST", "/v1/embeddings", {"model": "all-mpnet-base-v2", "input": "x"})
    assert status == 404 and "this server has all-MiniLM-L6-v2" in body["error"]["message"]


def test_grounded_answers_carry_sources_and_checks(server, client, home):
    reply = client.chat.completions.create(model="docs:garden", temperature=0, max_tokens=60, messages=[
        {"role": "user", "content": "How many hours of sun do tomatoes need?"}])
    extension = reply.model_extra["hearth"]
    assert extension["sources"][0]["path"].endswith("garden.md") and extension["sources"][0]["heading"] == "Garden"
    assert {"score", "threshold", "sentences"} <= set(extension["checks"])
    assert extension["content"] == reply.choices[0].message.content
    chunks = list(client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=60, stream=True, extra_body={"hearth": {"collection": "garden", "k": 1}},
        messages=[{"role": "user", "content": "Where does the hive stand?"}]))
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert [s["path"] for s in last.model_extra["hearth"]["sources"]] == [str(Path(extension["sources"][0]["path"])
                                                                         .with_name("bees.md"))]
    from assistant.store import Store

    os.environ["HEARTH_HOME"], saved = str(home), os.environ["HEARTH_HOME"]
    try:
        conversations = Store().list_conversations()
    finally:
        os.environ["HEARTH_HOME"] = saved
    assert any(c.settings.get("served") and c.settings.get("collection") == "garden" for c in conversations)


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "invalid_json"),
    ({"model": MODEL, "messages": "hello"}, 400, "invalid_type"),
    (ask("hi", temperature="hot"), 400, "invalid_type"),
    (ask("hi", temperature=3), 400, "invalid_value"),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
    (ask("hi", n=2), 400, "unsupported_value"),
    (ask("hi", tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported_parameter"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400, "unsupported_content"),
    (ask("word " * 9000), 400, "context_length_exceeded"),
    (ask("x" * (5 * 1024 * 1024)), 413, "request_too_large"),
    ({"model": "docs:nothing", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
])
def test_errors_are_openai_error_objects(server, body, status, code):
    got, payload, _ = raw(server, "POST", "/v1/chat/completions", body)
    assert got == status
    assert set(payload["error"]) == {"message", "type", "param", "code"} and payload["error"]["code"] == code


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server, client):
    url = urlparse(server.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(ask("Tell me a very long story.", max_tokens=500,
                                                                     stream=True)),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    response.fp.readline()  # the first event has come
    conn.sock.shutdown(2)
    conn.close()
    deadline = time.monotonic() + 60
    while metric(server, "hearth_active_sequences") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(server, "hearth_active_sequences") == 0  # cancelled, not decoded to 500 tokens
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=3).choices[0].finish_reason  # still serving


def test_health_and_metrics(server):
    status, body, _ = raw(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    assert metric(server, 'hearth_requests_total{endpoint="/v1/chat/completions",status="200"}') >= 1
    assert metric(server, "hearth_completion_tokens_total") > 0


def test_api_key_queue_limit_and_sigterm(home, tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret-key\n")
    env = os.environ | {"HEARTH_HOME": str(home)}
    server = ServerProcess("--backend", "scratch", "--parallel", "1", "--max-queue", "1", "--api-key-file", str(key),
                           env=env)
    try:
        assert raw(server, "GET", "/health")[0] == 200  # open without the key
        status, body, _ = raw(server, "GET", "/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert raw(server, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": "Bearer s3cret-key"}
        client = openai.OpenAI(base_url=server.url, api_key="s3cret-key", max_retries=0)
        assert client.models.list().data[0].id == MODEL

        # one request decoding, one waiting: a third is turned away with Retry-After
        results: dict = {}
        long = [threading.Thread(target=lambda i=i: results.__setitem__(i, raw(
            server, "POST", "/v1/chat/completions", ask("Tell me a long story.", max_tokens=120), auth)))
            for i in range(2)]
        for t in long:
            t.start()
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while metric(server, "hearth_queue_depth", auth) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, body, headers = raw(server, "POST", "/v1/chat/completions", ask("hi", max_tokens=2), auth)
        assert (status, body["error"]["code"]) == (429, "queue_full"), body
        assert headers["retry-after"].isdigit(), headers
        for t in long:
            t.join()
        assert [results[i][0] for i in range(2)] == [200, 200]

        # SIGTERM during a stream: the stream ends cleanly, the server exits 0
        url = urlparse(server.base)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(ask("Count to twenty.", max_tokens=40,
                                                                         stream=True)),
                     headers={"Content-Type": "application/json", **auth})
        response = conn.getresponse()
        assert response.readline().startswith(b"data: ")  # streaming has begun
        server.proc.send_signal(signal.SIGTERM)
        rest = response.read().decode()
        assert rest.rstrip().endswith("data: [DONE]")
        assert server.proc.wait(60) == 0
    finally:
        server.stop()


def test_serving_beyond_loopback_needs_a_key():
    run = hearth("serve", "--host", "0.0.0.0", check=False)
    assert run.returncode == 1 and "give --api-key-file" in run.stderr
