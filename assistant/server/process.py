"""`hearth serve` as a child process, started the way a user starts it (for the benchmark and tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

URL = re.compile(r" at (http://\S+/v1) ")


class ServerProcess:
    """Starts `hearth serve --port 0 ARGS`, waits for the URL it prints; stop() sends SIGTERM."""

    def __init__(self, *args: str, env: dict | None = None, start_timeout_s: float = 300):
        self.proc = subprocess.Popen([sys.executable, "-m", "assistant.cli", "serve", "--port", "0", *args],
                                     env=env or os.environ.copy(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._url = threading.Event()
        self.url: str | None = None
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + start_timeout_s
        while not self._url.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("hearth serve did not start:\n" + "".join(self.lines))
        self.base = self.url[: -len("/v1")]

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = URL.search(line)
            if match and self.url is None:
                self.url = match.group(1)
                self._url.set()

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
