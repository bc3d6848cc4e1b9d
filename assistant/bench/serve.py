"""`hearth bench serve`: the real server under concurrent streaming clients, one level at a time.

`hearth serve --backend scratch` is started as a user starts it; at each concurrency level, that
many client threads stream chat completions over HTTP until the level's requests are done. Per
level: total generated tokens per second (wall clock of the level), time to first token (request
sent -> first content chunk) p50/p95, and errors. A request is lost when its stream does not end
with a finish_reason and [DONE]. The batching speedup is total tokens/s at the highest level over
the level of 1, in the same run, same server, same prompts.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Callable
from urllib.parse import urlparse

QUESTIONS = [
    "Write a short story about a lighthouse keeper.", "Explain how a bicycle works.",
    "Describe a walk through a forest in autumn.", "What should I pack for a weekend of camping?",
    "Tell me about the history of bread.", "How do bees make honey?",
    "Describe the life of a river from source to sea.", "Give me advice on learning to play the piano.",
]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _stream(base: str, model: str, question: str, max_tokens: int) -> dict:
    """One streaming request: {"ttft", "tokens", "complete", "error"}."""
    url = urlparse(base)
    body = {"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    result = {"ttft": None, "tokens": 0, "complete": False, "error": None}
    sent = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            result["error"] = f"HTTP {response.status}"
            return result
        finished = False
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                result["complete"] = finished
                break
            event = json.loads(data)
            if "error" in event:
                result["error"] = event["error"]["message"]
                break
            for choice in event.get("choices", []):
                if choice["delta"].get("content") and result["ttft"] is None:
                    result["ttft"] = time.perf_counter() - sent
                finished = finished or choice.get("finish_reason") is not None
            if event.get("usage"):
                result["tokens"] = event["usage"]["completion_tokens"]
        conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def _level(base: str, model: str, concurrency: int, requests: int, max_tokens: int) -> tuple[dict, int]:
    results: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            outcome = _stream(base, model, QUESTIONS[i % len(QUESTIONS)], max_tokens)
            with lock:
                results.append(outcome)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    summary = {"total_tok_s": round(sum(r["tokens"] for r in results) / wall, 2),
               "ttft_p50_s": _round(_percentile(ttfts, 0.5)), "ttft_p95_s": _round(_percentile(ttfts, 0.95)),
               "errors": sum(r["error"] is not None for r in results), "requests": len(results),
               "seconds": round(wall, 2)}
    lost = sum(not r["complete"] for r in results) + requests - len(results)
    return summary, lost


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run(levels: list[int], requests: int, max_tokens: int, precision: str = "fp32",
        report: Callable[[str], None] = print) -> dict:
    from assistant.server.process import ServerProcess

    report(f"starting hearth serve (scratch, {precision}, {max(levels)} slots)…")
    with ServerProcess("--backend", "scratch", "--precision", precision, "--parallel", str(max(levels)),
                       "--max-queue", str(max(levels) * 4)) as server:
        model = json.loads(_get(server.base, "/v1/models"))["data"][0]["id"]
        _stream(server.base, model, "Hello", 8)  # warm-up, not measured
        out: dict = {"levels": {}, "lost": 0, "max_tokens": max_tokens, "precision": precision}
        for level in levels:
            report(f"concurrency {level}: {requests} streaming requests of up to {max_tokens} tokens…")
            summary, lost = _level(server.base, model, level, requests, max_tokens)
            out["levels"][str(level)] = summary
            out["lost"] += lost
        if "1" in out["levels"] and len(levels) > 1:
            top = str(max(levels))
            base = out["levels"]["1"]["total_tok_s"]
            out[f"batching_speedup_{top}"] = round(out["levels"][top]["total_tok_s"] / base, 2) if base else None
    return out


def _get(base: str, path: str) -> str:
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("GET", path)
    text = conn.getresponse().read().decode()
    conn.close()
    return text
