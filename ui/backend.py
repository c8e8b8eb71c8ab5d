"""The server, as the UI process sees it: its private HTTP API over a Unix socket.

    backend = Backend("/tmp/qwen3-demo-xyz/server.sock")   # + chat_socket=".../api-1.sock"
    async for event in backend.chat(messages, thinking=True, params={...}): ...
    backend.status()            # the latest status, polled in the background (no waiting)

Chat replies and benchmark runs arrive as JSON lines; leaving the loop early closes the
stream, and the server aborts the request in the engine. An error the server answers with
(busy, not ready, bad input, shutting down, a benchmark running) is raised as `BackendError`
with its message and its code (`engine.types.ErrorCode`): the UI decides by the code.

With several API processes (`--api-processes`), a worker sends its chats to the private socket
of the one the app gave it (`chat_socket`) and everything else to the main process; while that
API process is down (it is being replaced), its chats go to the main process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx

from engine.types import EngineStatus, ErrorCode
from protocol import ChatRequest, Event, StreamError, decode

POLL_SECONDS = 0.5


class BackendError(RuntimeError):
    """What the server said when it refused or ended a request: `status` is its HTTP status,
    `code` its ErrorCode (None when no answer came, or one without a code)."""

    def __init__(self, message: str, status: int = 503, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code

    @classmethod
    def from_answer(cls, answer: dict, status: int) -> BackendError:
        """The error an answer's JSON (a body or a stream line) carries."""
        code = answer.get("code")
        return cls(str(answer.get("error") or "no answer"), status, code if code else None)

    @property
    def busy(self) -> bool:
        return self.code == ErrorCode.BUSY

    @property
    def shutting_down(self) -> bool:
        return self.code == ErrorCode.SHUTTING_DOWN


class Backend:
    """The server's private API, with the engine's status kept fresh by a polling thread."""

    def __init__(self, socket_path: str, chat_socket: str | None = None):
        self.socket_path = socket_path
        self.chat_socket = chat_socket or socket_path
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
    def _client(self, path: str | None = None) -> httpx.AsyncClient:
        """One pooled client per event loop (Gradio's) and socket (the main one by default)."""
        path = path or self.socket_path
        key = (asyncio.get_running_loop(), path)
        client = self._clients.get(key)
        if client is None:
            transport = httpx.AsyncHTTPTransport(uds=path)
            client = httpx.AsyncClient(
                transport=transport,
                base_url="http://server",
                timeout=httpx.Timeout(None, connect=10),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
            )
            self._clients[key] = client
        return client

    async def _lines(
        self, path: str, body: dict, socket: str | None = None
    ) -> AsyncIterator[Event]:
        """POST `body` (to `socket`, else the main one); yield the response's events
        (`protocol`); raise BackendError for an error, whether the server refused the request
        or ended its stream with one. A socket nobody listens on (an API process being
        replaced) sends the request to the main process instead: nothing was sent yet."""
        self.active += 1
        try:
            try:
                opened = await self._open(path, body, socket)
            except httpx.ConnectError:
                opened = await self._open(path, body, None)
            async with aclosing(opened) as response:
                if response.status_code != 200:
                    raise _refusal(await response.aread(), response.status_code)
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    event = decode(line)
                    if isinstance(event, StreamError):
                        raise BackendError(event.error, event.status, event.code or None)
                    yield event
        except httpx.HTTPError as err:
            raise BackendError(f"the server does not answer ({type(err).__name__})") from None
        finally:
            self.active -= 1

    async def _open(self, path: str, body: dict, socket: str | None) -> httpx.Response:
        """The streamed response to a POST, its head read (the caller closes it)."""
        client = self._client(socket)
        return await client.send(client.build_request("POST", path, json=body), stream=True)

    def chat(self, request: ChatRequest) -> AsyncIterator[Event]:
        """A chat reply's events: ChatDelta..., then ChatDone."""
        return self._lines("/internal/chat", request.to_json(), self.chat_socket)

    def benchmark(
        self, pairs: list[tuple[str, str]], spec: dict, owner: str | None = None
    ) -> AsyncIterator[Event]:
        """A benchmark run's events: BenchmarkProgress..., then BenchmarkDone (or Cancelled,
        when its owner cancels it from any UI worker)."""
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
            raise _refusal(response.content, response.status_code)
        return response.json()["run"]

    async def restart(self) -> dict:
        try:
            response = await self._client().post("/internal/restart")
        except httpx.HTTPError as err:
            raise BackendError(f"the server does not answer ({type(err).__name__})") from None
        if response.status_code != 200:
            raise _refusal(response.content, response.status_code)
        return response.json()


def _refusal(body: bytes, status: int) -> BackendError:
    """The BackendError of an error response: its JSON's message and code, else its text."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("error"):
        return BackendError.from_answer(answer, status)
    return BackendError(body[:300].decode(errors="replace") or "no answer", status)
