"""The Gradio UI as a process of its own beside the server, started and stopped with the app
and started again if it dies while the app runs.

Gradio's work for every open page (the queue, each streamed redraw) then has an interpreter
of its own instead of sharing one with the engine's front end and the HTTP API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.children import keep

ROOT = Path(__file__).resolve().parent.parent
RESTART_PAUSE_S = 2.0
UNUSABLE = 2  # the UI's exit status when it cannot listen on its port


class UiProcess:
    """`python -m ui ...` with the app's settings; secrets travel in its environment."""

    def __init__(self, argv: list[str], secrets: dict[str, str | None]):
        self.argv = argv
        self.env = {**os.environ, **{k: v for k, v in secrets.items() if v}}
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self._last_start = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "ui", *self.argv], cwd=ROOT, env=self.env
        )
        keep(self.process.pid)
        self.starts += 1
        self._last_start = time.monotonic()

    def check(self) -> bool:
        """Start the UI again if it has exited (not sooner than a pause after the last start);
        False if it cannot run at all (it could not listen on its port)."""
        if self.process is None or self.process.poll() is None:
            return True
        if self.process.returncode == UNUSABLE:
            return False
        if time.monotonic() - self._last_start < RESTART_PAUSE_S:
            return True
        print(
            f"[app] the UI process exited with {self.process.returncode}; starting it again",
            flush=True,
        )
        self.start()
        return True

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM (it ends its streams with a message and closes), SIGKILL after `timeout`."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
