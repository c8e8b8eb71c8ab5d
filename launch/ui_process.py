"""The Gradio UI in processes of its own beside the server: one or more UI workers on loopback,
and the front on the public port that keeps each browser on its worker (`launch.ui_front`,
Caddy). All are started and stopped with the app, and started again if one dies while the app
runs.

Gradio's work for every open page (the queue, each streamed redraw) then has interpreters of
its own instead of sharing one with the engine's front end and the HTTP API; several workers
share the pages between them. No byte from outside reaches a worker unparsed: the front, a
maintained HTTP server, takes every connection, with one worker as with eight.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from launch.processes import keep

ROOT = Path(__file__).resolve().parent.parent
RESTART_PAUSE_S = 2.0
UNUSABLE = 2  # a UI process's exit status when it cannot listen on its port
CORES_PER_WORKER = 4
MIN_WORKERS = 2
MAX_WORKERS = 8


def auto_workers(cores: int | None = None) -> int:
    """UI workers for a machine: one per four cores (the engine needs some), at least two and
    at most eight. Two on a small machine too: with the engine on its cores, each worker gets a
    scheduler's share of what is left (2 cores, 128 chats of 8 tokens: UI first chunk p95
    12.4-14.7 s with one worker, 5.7 s with two)."""
    cores = cores or os.cpu_count() or 1
    return max(MIN_WORKERS, min(MAX_WORKERS, cores // CORES_PER_WORKER))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (for a worker behind the front, on loopback)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class UiProcess:
    """`python -m MODULE ...` with the app's settings; secrets travel in its environment."""

    def __init__(self, argv: list[str], secrets: dict[str, str | None], module: str = "ui"):
        self.argv, self.module = argv, module
        self.env = {**os.environ, **{k: v for k, v in secrets.items() if v}}
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self._last_start = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", self.module, *self.argv], cwd=ROOT, env=self.env
        )
        keep(self.process.pid)
        self.starts += 1
        self._last_start = time.monotonic()

    def check(self) -> bool:
        """Start it again if it has exited (not sooner than a pause after the last start);
        False if it cannot run at all (it could not listen on its port)."""
        if self.process is None or self.process.poll() is None:
            return True
        if self.process.returncode == UNUSABLE:
            return False
        if time.monotonic() - self._last_start < RESTART_PAUSE_S:
            return True
        print(
            f"[app] the UI process ({self.module}) exited with {self.process.returncode}; "
            "starting it again",
            flush=True,
        )
        self.start()
        return True

    def signal(self, number: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(number)

    def wait(self, deadline: float) -> None:
        """Until it exits or the deadline passes; then SIGKILL."""
        process = self.process
        if process is None:
            return
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class UiGroup:
    """The UI's processes: `workers` Gradio workers on loopback ports and the front on the
    public address."""

    def __init__(
        self,
        worker_argv: list[str],
        host: str,
        port: int,
        workers: int,
        secrets: dict[str, str | None],
        share: bool = False,
        chat_sockets: list[str] | None = None,
    ):
        self.host, self.port = host, port
        self.workers: list[UiProcess] = []
        self.worker_urls = []
        for index in range(workers):
            worker_port = free_port()
            self.worker_urls.append(f"http://127.0.0.1:{worker_port}")
            place = ["--host", "127.0.0.1", "--port", str(worker_port), "--quiet"]
            if share and index == 0:  # the first worker opens the public link to the front
                place += ["--share-tunnel", str(port)]
            if chat_sockets:  # the API processes' sockets, dealt out to the workers in turn
                place += ["--chat-socket", chat_sockets[index % len(chat_sockets)]]
            self.workers.append(UiProcess(worker_argv + place, secrets))
        front = ["--host", host, "--port", str(port)]
        for url in self.worker_urls:
            front += ["--worker", url]
        self.front = UiProcess(front, {}, module="launch.ui_front")

    @property
    def processes(self) -> list[UiProcess]:
        return [*self.workers, self.front]

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def check(self) -> bool:
        """Restart what died; False if the UI cannot run (its public port is taken)."""
        return all([process.check() for process in self.processes])

    def served(self, timeout: float = 1.0) -> bool:
        """Whether the page is served through the front now: a worker answers `/config` (with
        `--auth`, its answer is the login's 401)."""
        try:
            near = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}
            host = near.get(self.host, f"[{self.host}]" if ":" in self.host else self.host)
            url = f"http://{host}:{self.port}/config"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status == 200
        except urllib.error.HTTPError as err:
            return err.code < 500
        except OSError:
            return False

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM to all (the workers end their streams with a message and close, the front
        relays those last messages), SIGKILL to what is left after `timeout`."""
        for process in self.processes:
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.wait(deadline)
