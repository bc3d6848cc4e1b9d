"""Helpers for driving the chat UI with Textual's pilot."""

import time

from tui.widgets import ChatInput

SIZE = (110, 36)


async def ready(pilot, app):
    for _ in range(200):
        if app.session is not None:
            return
        await pilot.pause(0.05)
    raise AssertionError("backend never loaded: " + app.status_note)


async def settle(pilot, app, timeout=30):
    deadline = time.monotonic() + timeout
    await pilot.pause(0.05)
    while app.generating and time.monotonic() < deadline:
        await pilot.pause(0.05)
    await pilot.pause(0.05)
    assert not app.generating


async def until(pilot, condition, timeout=10):
    """Wait until condition() holds (the UI updates asynchronously; a busy machine is slower)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert condition()


async def say(pilot, app, text):
    app.query_one("#input", ChatInput).focus()
    app.query_one("#input", ChatInput).load_text(text)
    await pilot.press("enter")
    await settle(pilot, app)
