"""`hearth bench tui`: time to the chat's first frame, and rendering cost per streamed token."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


def first_frame_seconds(runs: int = 3) -> float:
    """Median seconds from launching `hearth chat` to its first painted frame (a real process)."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            marker = Path(tmp) / "frame"
            env = {**os.environ, "HEARTH_FIRST_FRAME_FILE": str(marker), "TERM": os.environ.get("TERM", "xterm-256color")}
            start = time.time()
            proc = subprocess.Popen([sys.executable, "-m", "assistant.cli", "chat"], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            proc.wait(timeout=120)
            if not marker.exists():
                raise RuntimeError("the chat exited without painting a frame")
            times.append(float(marker.read_text()) - start)
    return statistics.median(times)


def _reply_tokens(n: int) -> list[str]:
    """A realistic Markdown reply split into word-sized tokens: paragraphs, a list, code blocks."""
    words = ("the engine keeps a cache of keys and values so each new token only attends to what came "
             "before it which makes decoding fast").split()
    tokens: list[str] = []
    i = 0
    while len(tokens) < n:
        block = i % 6
        if block == 3:
            tokens += ["\n\n```python\n", "def", " step", "(x):", "\n", "    return", " x", " +", " 1", "\n```\n\n"]
        elif block == 4:
            tokens += ["\n\n- ", "first", " point", "\n- ", "second", " point", "\n\n"]
        else:
            tokens += [" " + words[(i * 7 + j) % len(words)] for j in range(40)] + [".\n\n"]
        i += 1
    return tokens[:n]


async def _render_costs(n_tokens: int) -> list[float]:
    from textual.app import App
    from textual.containers import VerticalScroll
    from tui.widgets import MessageBox, ReplyStream

    class Bench(App):
        def compose(self):
            yield VerticalScroll(id="chat")

    app = Bench()
    costs = []
    async with app.run_test(size=(110, 40)) as pilot:
        box = MessageBox("assistant", "", "Hearth")
        chat = app.query_one("#chat", VerticalScroll)
        await chat.mount(box)
        chat.anchor()
        stream = ReplyStream(box)
        for token in _reply_tokens(n_tokens):
            start = time.perf_counter()
            await stream.write(token)
            await pilot.pause()  # let the stream render and the screen refresh
            costs.append((time.perf_counter() - start) * 1000)
        await stream.stop()
    return costs


def run(n_tokens: int = 2000, report: Callable[[str], None] = print) -> dict:
    """Both measurements; rendering uses the app's own MessageBox and Markdown stream."""
    frame = first_frame_seconds()
    report(f"first frame of `hearth chat`: {frame:.2f} s")
    costs = asyncio.run(_render_costs(n_tokens))
    first, last = statistics.mean(costs[:100]), statistics.mean(costs[-100:])
    report(f"render per token: first 100 {first:.2f} ms, last 100 {last:.2f} ms ({last / first:.2f}x)")
    return {"first_frame_s": round(frame, 3), "render_ms_per_token_first_100": round(first, 3),
            "render_ms_per_token_last_100": round(last, 3)}
