"""`hearth chat` in a real terminal (tmux): type a question, wait for the reply, read the screen."""

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def last_line(screen: str) -> str:
    lines = [line for line in screen.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def tmux(*args):
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def test_chat_in_tmux(tiny_llama_dir, hearth_home):
    session = f"hearth-{uuid.uuid4().hex[:8]}"
    hearth = f"{sys.executable} -m assistant.cli"
    command = f"HEARTH_HOME={hearth_home} {hearth} chat --model {tiny_llama_dir} --max-tokens 12"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "32", command)
    try:
        screen = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "ready" not in screen:
            time.sleep(0.5)
            screen = tmux("capture-pane", "-p", "-t", session)
        assert "ready" in screen, screen
        tmux("send-keys", "-t", session, "-l", "what is a fox")
        tmux("send-keys", "-t", session, "Enter")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen = tmux("capture-pane", "-p", "-t", session)
            if "Hearth · hf" in screen and last_line(screen).rstrip().endswith("ready") and "tok/s" in screen:
                break
        assert "what is a fox" in screen and "Hearth · hf" in screen, screen
        assert "tok/s" in last_line(screen)
        tmux("send-keys", "-t", session, "C-q")
        time.sleep(1.0)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    from assistant.store import Store

    os.environ["HEARTH_HOME"] = str(hearth_home)
    [conv] = Store().list_conversations()
    assert [m.role for m in Store().messages(conv.id)] == ["user", "assistant"]
