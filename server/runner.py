"""uvicorn on the engine's event loop: the public API on a TCP port, the UI's on a Unix socket.

On the engine's own loop, vLLM's streaming responses reach the client token by token (served
from another loop, chunks arrived in bunches about every 100 ms), and the handlers call the
engine directly.

    servers = HttpServers(service)
    servers.add(public_app, host="127.0.0.1", port=8000)
    servers.add(private_app, uds="/run/.../server.sock")
    servers.add(public_app, sock=listening_socket)   # a port shared by several processes
    servers.start()          # raises OSError if one cannot listen
    servers.stop(timeout=3)  # streams still open after `timeout` are cut
"""

from __future__ import annotations

import time
from contextlib import suppress

import uvicorn

from engine import EngineService


class HttpServers:
    """Several uvicorn servers, each a task on the engine's loop."""

    def __init__(self, service: EngineService):
        self.service = service
        self.servers: list[tuple[uvicorn.Server, str]] = []
        self._sockets: dict[int, list] = {}  # a server's listening sockets made elsewhere
        self._tasks: list = []

    def add(self, app, sock=None, headers: list[tuple[str, str]] | None = None, **where) -> None:
        """Serve `app` at `host`+`port` or at `uds` (uvicorn's own arguments), or on `sock`, a
        listening socket (one that other processes accept on too); `headers` go on every
        response."""
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=3,
            timeout_keep_alive=30,
            headers=headers,
            **where,
        )
        name = where.get("uds") or f"port {where.get('port') or sock.getsockname()[1]}"
        server = uvicorn.Server(config)
        if sock is not None:
            self._sockets[id(server)] = [sock]
        self.servers.append((server, name))

    async def _serve(self, server: uvicorn.Server, name: str) -> None:
        try:
            await server.serve(sockets=self._sockets.get(id(server)))
        except SystemExit:  # uvicorn's answer to an address in use; it must not stop the loop
            raise OSError(f"the HTTP API could not listen on {name}") from None

    def start(self, timeout: float = 30) -> None:
        """Start serving (the service must be started); raise OSError if one cannot listen."""
        self._tasks = [self.service.submit(self._serve(s, n)) for s, n in self.servers]
        deadline = time.monotonic() + timeout
        for (server, name), task in zip(self.servers, self._tasks, strict=True):
            while not server.started and not task.done():
                if time.monotonic() > deadline:
                    raise OSError(f"the HTTP API did not start listening on {name}")
                time.sleep(0.05)
            if task.done():
                task.result()

    def stop(self, timeout: float = 5) -> None:
        """Stop accepting, let open responses finish for a moment, then close."""
        for server, _ in self.servers:
            server.should_exit = True
        deadline = time.monotonic() + timeout
        for task in self._tasks:
            with suppress(Exception):
                task.result(timeout=max(0.1, deadline - time.monotonic()))
        for (server, _), task in zip(self.servers, self._tasks, strict=True):
            if not task.done():
                server.force_exit = True
                with suppress(Exception):
                    task.result(timeout=2)
