"""The UI's one public port in front of several UI worker processes, each browser kept on one.

    python -m launch.ui_front --port 7860 --worker http://127.0.0.1:41001 --worker ...

One Gradio process runs its queue, every page's events and every streamed redraw on one
interpreter, and with a few hundred people chatting at once that interpreter is the limit. So
the app can run several UI workers (`python -m ui --worker K`) and this small proxy on the
public port. A Gradio session lives in the worker that first saw it (its queue, its state, its
uploads), so every request of a browser must reach that worker: the session affinity that
Kubernetes and Hugging Face Spaces give replicated Gradio apps, with the same cookie mechanism
that `gradio_client` already follows.

A request with the cookie (`qwen3-ui-worker=K`) goes to the worker it names. One without it
goes to the worker its Gradio `session_hash` hashes to (a client that keeps no cookies) or,
when it names no session (a new page), to the next worker in turn, and its response sets the
cookie. Responses stream through unchanged (server-sent events included); a client that goes
away closes its request to the worker, as if it had been connected there.

Nothing here imports Gradio: the front starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import zlib
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

import httpx
import uvicorn

COOKIE = "qwen3-ui-worker"
COOKIE_VALUE = COOKIE + "={}; Path=/; HttpOnly; SameSite=Lax"
# Headers of one hop (RFC 9110 section 7.6.1): never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
MAX_PEEK_BYTES = 64 * 1024  # bodies read whole to find a session_hash (Gradio's event calls)


def cookie_worker(headers, workers: int) -> int | None:
    """The worker named by the request's affinity cookie, None if none (or out of range)."""
    for name, value in headers:
        if name != b"cookie":
            continue
        try:
            jar = SimpleCookie(value.decode("latin-1"))
        except CookieError:
            continue
        if COOKIE in jar and jar[COOKIE].value.isdigit():
            index = int(jar[COOKIE].value)
            if index < workers:
                return index
    return None


def session_of(path: str, query: bytes, body: bytes | None) -> str | None:
    """The Gradio session a request belongs to, where it names one: `?session_hash=`,
    `/heartbeat/HASH`, or `"session_hash"` in a JSON body."""
    found = parse_qs(query.decode("latin-1")).get("session_hash")
    if found:
        return found[0]
    if "/heartbeat/" in path:
        return path.rsplit("/heartbeat/", 1)[1].split("/", 1)[0] or None
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if isinstance(data, dict) and isinstance(data.get("session_hash"), str):
            return data["session_hash"]
    return None


def session_worker(session_hash: str, workers: int) -> int:
    """The worker a session without a cookie goes to: the same one every time."""
    return zlib.crc32(session_hash.encode()) % workers


class Front:
    """The ASGI app on the public port: each request to its worker, the response back."""

    def __init__(self, workers: list[str]):
        self.urls = [w.rstrip("/") for w in workers]
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024)
        timeout = httpx.Timeout(None, connect=10)
        self.clients = [
            httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) for url in self.urls
        ]
        self._turn = 0

    def _next_turn(self) -> int:
        self._turn = (self._turn + 1) % len(self.urls)
        return self._turn

    def choose(self, scope, body: bytes | None) -> tuple[int, bool]:
        """(the worker for this request, whether the request carried its cookie)."""
        workers = len(self.urls)
        index = cookie_worker(scope["headers"], workers)
        if index is not None:
            return index, True
        session = session_of(scope["path"], scope.get("query_string", b""), body)
        return (session_worker(session, workers) if session else self._next_turn()), False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":  # Gradio's pages speak HTTP and server-sent events only
            return
        body, more = await _peek_body(scope, receive)
        index, known = self.choose(scope, body)
        await self._forward(index, known, scope, body, more, receive, send)

    async def _forward(self, index, known, scope, body, more, receive, send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        client_addr = scope.get("client")
        if client_addr:
            headers.append((b"x-forwarded-for", client_addr[0].encode()))
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        content = body if not more else _body_stream(body, receive)
        response = None
        # A new visitor goes to another worker if this one is not up (starting, restarting);
        # a known one has its session there, and is told.
        tries = 1 if known or more else len(self.clients)
        for attempt in range(tries):
            worker = (index + attempt) % len(self.clients)
            request = self.clients[worker].build_request(
                scope["method"], target.decode("latin-1"), headers=headers, content=content
            )
            try:
                response = await self.clients[worker].send(request, stream=True)
                index = worker
                break
            except httpx.ConnectError:
                continue
            except httpx.HTTPError as err:
                await _plain(send, 502, f"the UI worker does not answer ({type(err).__name__})")
                return
        if response is None:
            await _plain(send, 502, "the UI is starting or restarting; reload the page shortly")
            return
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
        if not known:
            headers.append((b"set-cookie", COOKIE_VALUE.format(index).encode()))
        try:
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            await _relay_body(response, receive, send)
        finally:
            await response.aclose()

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for client in self.clients:
                    await client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _peek_body(scope, receive) -> tuple[bytes | None, bool]:
    """A request's body when it is small enough to look into (a Gradio event call): (body,
    whether more follows). Bodies of other requests (uploads) are left to stream."""
    length = dict(scope["headers"]).get(b"content-length")
    if scope["method"] in ("GET", "HEAD") or length is None:
        return (None, scope["method"] not in ("GET", "HEAD"))
    if not length.isdigit() or int(length) > MAX_PEEK_BYTES:
        return (b"", True)
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return (b"".join(chunks), False)
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return (b"".join(chunks), False)


async def _body_stream(first: bytes | None, receive):
    """The rest of a request's body as it arrives (after what was already read)."""
    if first:
        yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _relay_body(response, receive, send) -> None:
    """Stream the worker's response to the client until it ends or the client goes away."""

    async def pump():
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def gone():
        while (await receive())["type"] != "http.disconnect":
            pass

    relay, watch = asyncio.ensure_future(pump()), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relay, watch):
            task.cancel()
        await asyncio.gather(relay, watch, return_exceptions=True)
    if relay.done() and not relay.cancelled() and relay.exception() is not None:
        raise relay.exception()


async def _plain(send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FrontServer(uvicorn.Server):
    """uvicorn's server with the app's stop semantics: the first SIGINT or SIGTERM lets the
    streams in flight end (the workers end them with their shutdown message), a second
    Ctrl-C ends at once; no signal is raised again on the way out (no traceback)."""

    @contextlib.contextmanager
    def capture_signals(self):
        def on_signal(number, frame) -> None:
            if self.should_exit and number == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, on_signal)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.ui_front", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--worker", action="append", required=True, help="a UI worker's URL")
    parser.add_argument(
        "--drain-seconds", type=float, default=5.0, help="how long a stop waits for open streams"
    )
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        Front(args.worker),
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=args.drain_seconds,
    )
    try:
        socket = config.bind_socket()
    except SystemExit:  # uvicorn says why (the port is in use) and exits
        return 2
    print(
        f"* Running on local URL: http://{args.host}:{args.port} "
        f"({len(args.worker)} UI workers behind it)",
        flush=True,
    )
    FrontServer(config).run(sockets=[socket])
    return 0


if __name__ == "__main__":
    sys.exit(main())
