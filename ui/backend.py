"""The server, as the UI process sees it: its private HTTP API over a Unix socket.

    backend = Backend("/tmp/qwen3-demo-xyz/server.sock")
    async for event in backend.chat(messages, thinking=True, params={...}): ...
    backend.status()            # the latest status, polled in the background (no waiting)

Chat replies and benchmark runs arrive as JSON lines; leaving the loop early closes the
stream, and the server aborts the request in the engine. An error the server answers with
(busy, not ready, bad input, shutting down) is raised as `BackendError` with its message.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator

import httpx

from engine.types import EngineStatus

POLL_SECONDS = 0.5


class BackendError(RuntimeError):
    """What the server said when it refused or ended a request; `status` is its HTTP code."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(message)
        self.status = status

    @property
    def busy(self) -> bool:
        return self.status == 503 and "busy" in str(self)


class Backend:
    """The server's private API, with the engine's status kept fresh by a polling thread."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.stopping = threading.Event()  # set when this process is shutting down
        self.active = 0  # streams open now (chats and benchmark runs)
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._latest: dict = {
            "status": EngineStatus("idle", "waiting for the server").to_dict(),
            "restarts": 0,
            "closing": False,
        }
        self._poller: threading.Thread | None = None

    # ---- status ----------------------------------------------------------------------
    def start_polling(self) -> None:
        self._poller = threading.Thread(target=self._poll, name="status-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        transport = httpx.HTTPTransport(uds=self.socket_path)
        with httpx.Client(transport=transport, base_url="http://server", timeout=5) as client:
            while not self.stopping.is_set():
                try:
                    self._latest = client.get("/internal/status").json()
                except (httpx.HTTPError, ValueError):
                    self._latest = {**self._latest, "reachable": False}
                time.sleep(POLL_SECONDS)

    def status(self) -> EngineStatus:
        return EngineStatus.from_dict(self._latest["status"])

    @property
    def restarts(self) -> int:
        return int(self._latest.get("restarts", 0))

    @property
    def closing(self) -> bool:
        return bool(self._latest.get("closing")) or self.stopping.is_set()

    # ---- requests --------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        """One pooled client per event loop (Gradio's), over the socket."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            transport = httpx.AsyncHTTPTransport(uds=self.socket_path)
            client = httpx.AsyncClient(
                transport=transport,
                base_url="http://server",
                timeout=httpx.Timeout(None, connect=10),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
            )
            self._clients[loop] = client
        return client

    async def _lines(self, path: str, body: dict) -> AsyncIterator[dict]:
        """POST `body`; yield the response's JSON lines; raise BackendError for an error."""
        self.active += 1
        try:
            async with self._client().stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    raise BackendError(_message(await response.aread()), response.status_code)
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if "error" in event:
                        raise BackendError(event["error"], int(event.get("status", 503)))
                    yield event
        except httpx.HTTPError as err:
            raise BackendError(f"the server does not answer ({type(err).__name__})") from None
        finally:
            self.active -= 1

    def chat(self, messages: list[dict], thinking: bool, params: dict) -> AsyncIterator[dict]:
        """A chat reply's events: deltas (`reasoning`, `answer`, `tokens`), then `done`."""
        return self._lines(
            "/internal/chat", {"messages": messages, "thinking": thinking, "params": params}
        )

    def benchmark(
        self, pairs: list[tuple[str, str]], spec: dict, owner: str | None = None
    ) -> AsyncIterator[dict]:
        """A benchmark run's events: `progress` with `new_samples`, then `result` (or
        `cancelled`, when its owner cancels it from any UI worker)."""
        body = {"pairs": [list(p) for p in pairs], "spec": spec, "owner": owner}
        return self._lines("/internal/benchmark", body)

    async def cancel_benchmark(self, owner: str | None) -> str:
        """Cancel the run `owner` started: "cancelled", "none" (no run) or "other" (not theirs)."""
        try:
            path = "/internal/benchmark/cancel"
            response = await self._client().post(path, json={"owner": owner})
        except httpx.HTTPError as err:
            raise BackendError(f"the server does not answer ({type(err).__name__})") from None
        if response.status_code != 200:
            raise BackendError(_message(response.content), response.status_code)
        return response.json()["run"]

    async def restart(self) -> dict:
        try:
            response = await self._client().post("/internal/restart")
        except httpx.HTTPError as err:
            raise BackendError(f"the server does not answer ({type(err).__name__})") from None
        if response.status_code != 200:
            raise BackendError(_message(response.content), response.status_code)
        return response.json()


def _message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error or body[:300].decode(errors="replace") or "no answer")
