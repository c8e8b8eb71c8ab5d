"""The UI's one public port in front of several UI worker processes, each browser kept on one.

    python -m launch.ui_front --port 7860 --worker http://127.0.0.1:41001 --worker ...

One Gradio process runs its queue, every page's events and every streamed redraw on one
interpreter, and with a few hundred people chatting at once that interpreter is the limit. So
the app can run several UI workers (`python -m ui`) and this small proxy on the public port. A
Gradio session lives in the worker that first saw it (its queue, its state, its uploads), so
every request of a browser must reach that worker: the session affinity that Kubernetes and
Hugging Face Spaces give replicated Gradio apps, by the cookie that `gradio_client` follows.

A request with the cookie (`qwen3-ui-worker=K`) goes to the worker it names. One without it
goes to the worker its Gradio `session_hash` hashes to (a client that keeps no cookies) or,
when it names no session (a new page), to the next worker in turn, and its response sets the
cookie. Routing is per request, not per connection: a proxy in front (Gradio's share-link
tunnel among them) may carry several people's requests over one connection.

The proxy reads each request's head to route it and passes bytes through unchanged otherwise
(HTTP/1.1 framing is followed to know where a message ends: fixed length, chunked, or until the
connection closes), so that a streamed reply costs it one read and one write per piece. A
client that goes away closes its connection to the worker at once, as Gradio needs to see a
closed tab. Nothing here imports Gradio: the front starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import zlib
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

COOKIE = "qwen3-ui-worker"
SET_COOKIE = "set-cookie: " + COOKIE + "={}; Path=/; HttpOnly; SameSite=Lax"
MAX_HEAD_BYTES = 64 * 1024
MAX_PEEK_BYTES = 64 * 1024  # bodies read whole to find a session_hash (Gradio's event calls)
READ_BYTES = 256 * 1024
IDLE_REUSE_S = 2.0  # a worker connection idle longer is not reused (uvicorn closes at 5 s)
NO_BODY_STATUS = (204, 304)


class HttpError(Exception):
    """A message the front cannot pass on (malformed, too large); `status` for the client."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status


# ---- routing ---------------------------------------------------------------------------------
def cookie_worker(cookie_header: str | None, workers: int) -> int | None:
    """The worker named by a request's affinity cookie, None if none (or out of range)."""
    if not cookie_header:
        return None
    try:
        jar = SimpleCookie(cookie_header)
    except CookieError:
        return None
    value = jar[COOKIE].value if COOKIE in jar else ""
    return int(value) if value.isdigit() and int(value) < workers else None


def session_of(path: str, query: str, body: bytes | None) -> str | None:
    """The Gradio session a request belongs to, where it names one: `?session_hash=`,
    `/heartbeat/HASH`, or `"session_hash"` in a JSON body."""
    found = parse_qs(query).get("session_hash")
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


# ---- HTTP/1.1 framing ------------------------------------------------------------------------
class Head:
    """A message's start line and headers, as bytes and as the few fields the front needs."""

    def __init__(self, raw: bytes):
        self.raw = raw
        lines = raw[:-4].split(b"\r\n")
        self.start = lines[0].split(b" ", 2)
        if len(self.start) < 2:
            raise HttpError(400, "malformed start line")
        self.headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise HttpError(400, "malformed header line")
            name = name.strip().lower()
            value = value.strip()
            if name in self.headers and name == b"cookie":
                value = self.headers[name] + b"; " + value
            self.headers[name] = value

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    def with_header(self, line: bytes) -> bytes:
        return self.raw[:-2] + line + b"\r\n\r\n"

    @property
    def chunked(self) -> bool:
        return b"chunked" in self.headers.get(b"transfer-encoding", b"").lower()

    @property
    def length(self) -> int | None:
        value = self.headers.get(b"content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise HttpError(400, "bad content-length")
        return int(value)

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get(b"connection", b"").lower()
        if self.start[0].startswith(b"HTTP/"):  # a response: its version is first
            version = self.start[0]
        else:
            version = self.start[2] if len(self.start) > 2 else b"HTTP/1.0"
        if version == b"HTTP/1.0":
            return b"keep-alive" in connection
        return b"close" not in connection


class _NoAnswer(Exception):
    """The worker's connection ended before a response began."""


class Chunked:
    """Follows a chunked body through arbitrary pieces: how much of each piece is the body."""

    def __init__(self):
        self.line = b""  # a size or trailer line read in part
        self.left = 0  # bytes of the current chunk's data and its CRLF still to come
        self.trailers = False  # past the last chunk: trailer lines until an empty one
        self.done = False

    def feed(self, data: bytes) -> int:
        """How many bytes of `data` belong to the body (all, or up to its end)."""
        at = 0
        while at < len(data) and not self.done:
            if self.left:
                step = min(self.left, len(data) - at)
                self.left -= step
                at += step
                continue
            end = data.find(b"\n", at)
            if end < 0:
                self.line += data[at:]
                if len(self.line) > MAX_HEAD_BYTES:
                    raise HttpError(400, "chunk line too long")
                return len(data)
            line, self.line = (self.line + data[at:end]).rstrip(b"\r"), b""
            at = end + 1
            if self.trailers:
                self.done = not line
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise HttpError(400, "bad chunk size") from None
            if size == 0:
                self.trailers = True
            else:
                self.left = size + 2
        return at


class Peer:
    """One side of a connection, with the bytes read from it but not yet used."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.buffer = b""
        self.idle_since = 0.0
        self.reused = False  # a worker connection taken from the idle pool

    async def fill(self) -> bool:
        """Read more into the buffer; False at the end of the stream."""
        data = await self.reader.read(READ_BYTES)
        self.buffer += data
        return bool(data)

    async def head(self) -> Head | None:
        """The next message's head; None where the stream ends before one begins."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise HttpError(431, "request head too large")
            if not await self.fill():
                if self.buffer.strip():
                    raise HttpError(400, "connection closed inside a message head")
                return None
        end = self.buffer.index(b"\r\n\r\n") + 4
        raw, self.buffer = self.buffer[:end], self.buffer[end:]
        return Head(raw)

    def take(self, count: int) -> bytes:
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    async def body(self, head: Head, sink, has_body: bool = True) -> bool:
        """Pass the body that follows `head` to `sink` (a coroutine function) piece by piece;
        True if it ended by its framing, False if it ran to the end of the stream."""
        if not has_body:
            return True
        if head.chunked:
            framing = Chunked()
            while not framing.done:
                if not self.buffer and not await self.fill():
                    raise ConnectionError("closed inside a chunked body")
                await sink(self.take(framing.feed(self.buffer)))
            return True
        left = head.length
        if left is None and head.start[0].startswith(b"HTTP/"):  # a response: until closed
            while self.buffer or await self.fill():
                await sink(self.take(len(self.buffer)))
            return False
        left = left or 0
        while left:
            if not self.buffer and not await self.fill():
                raise ConnectionError("closed inside a body")
            piece = self.take(left)
            left -= len(piece)
            await sink(piece)
        return True

    async def send(self, data: bytes) -> None:
        if data:
            self.writer.write(data)
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


# ---- the proxy -------------------------------------------------------------------------------
class Front:
    """The public port's server: each request to its worker, the response back."""

    def __init__(self, workers: list[str]):
        self.places = []
        for url in workers:
            parts = urlsplit(url)
            self.places.append((parts.hostname or "127.0.0.1", parts.port or 80))
        self.idle: list[list[Peer]] = [[] for _ in workers]
        self._turn = -1
        self.stopping = False
        self.waiting: set[Peer] = set()  # clients between requests (closed at a stop)

    def stop(self) -> None:
        """Take no new request: close the connections that wait for one; those in the middle
        of a response close once it ends."""
        self.stopping = True
        for client in list(self.waiting):
            client.close()

    def choose(self, head: Head, body: bytes | None) -> tuple[int, bool]:
        """(the worker for this request, whether the request carried its cookie)."""
        workers = len(self.places)
        index = cookie_worker(head.header(b"cookie"), workers)
        if index is not None:
            return index, True
        target = urlsplit(head.start[1].decode("latin-1"))
        session = session_of(target.path, target.query, body)
        if session:
            return session_worker(session, workers), False
        self._turn = (self._turn + 1) % workers
        return self._turn, False

    async def serve(self, reader, writer) -> None:
        """One client connection: its requests one after another."""
        client = Peer(reader, writer)
        try:
            while not self.stopping:
                self.waiting.add(client)
                try:
                    head = await client.head()
                finally:
                    self.waiting.discard(client)
                if head is None or not await self.exchange(client, head):
                    return
        except HttpError as err:
            await _refuse(client, err.status, str(err))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            client.close()

    async def exchange(self, client: Peer, head: Head) -> bool:
        """Pass one request to its worker and the response back; whether the client's
        connection may carry another request."""
        if b"upgrade" in head.headers:
            raise HttpError(501, "protocol upgrades (WebSocket) are not served here")
        if head.header(b"expect") == "100-continue":
            await client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        peek = None
        if head.length is not None and 0 < head.length <= MAX_PEEK_BYTES and not head.chunked:
            while len(client.buffer) < head.length:
                if not await client.fill():
                    return False
            peek = client.take(head.length)
        index, known = self.choose(head, peek)
        replayable = peek is not None or (not head.chunked and not head.length)
        while True:
            worker, index = await self.connect(index, retry_others=not known)
            if worker is None:
                message = "the UI is starting or restarting; reload the page shortly"
                await _refuse(client, 502, message)
                return head.keep_alive
            try:
                await worker.send(head.raw)
                if peek is not None:
                    await worker.send(peek)
                else:
                    await client.body(head, worker.send)
                reused = await self.answer(client, worker, head, known, index)
                break
            except _NoAnswer:
                worker.close()
                if not (worker.reused and replayable):
                    await _refuse(client, 502, "the UI worker closed the connection unanswered")
                    return False
                # a kept-alive connection the worker had just closed: once more, on a new one
            except BaseException:
                worker.close()
                raise
        if reused:
            worker.idle_since = time.monotonic()
            self.idle[index].append(worker)
        else:
            worker.close()
        return head.keep_alive and reused

    async def answer(self, client: Peer, worker: Peer, request: Head, known: bool, index) -> bool:
        """Relay the worker's response; whether both connections may carry another message."""
        while True:
            try:
                head = await worker.head()
            except (ConnectionError, HttpError):
                head = None
            if head is None:
                raise _NoAnswer()
            status = int(head.start[1][:3]) if head.start[1][:3].isdigit() else 0
            if not 100 <= status < 200 or status == 101:
                break
            await client.send(head.raw)  # 100 Continue and the like: the answer follows
        raw = head.raw if known else head.with_header(SET_COOKIE.format(index).encode())
        await client.send(raw)
        has_body = request.start[0] != b"HEAD" and status not in NO_BODY_STATUS
        framed = await _relay_watching(worker, head, has_body, client)
        return framed and head.keep_alive

    async def connect(self, index: int, retry_others: bool) -> tuple[Peer | None, int]:
        """A connection to worker `index` (an idle one if fresh enough); for a new visitor,
        the next worker that answers if this one does not."""
        tries = len(self.places) if retry_others else 1
        for attempt in range(tries):
            worker = (index + attempt) % len(self.places)
            idle = self.idle[worker]
            while idle:
                peer = idle.pop()
                if time.monotonic() - peer.idle_since < IDLE_REUSE_S and not peer.reader.at_eof():
                    peer.reused = True
                    return peer, worker
                peer.close()
            try:
                reader, writer = await asyncio.open_connection(*self.places[worker])
            except OSError:
                continue
            return Peer(reader, writer), worker
        return None, index


async def _relay_watching(worker: Peer, head: Head, has_body: bool, client: Peer) -> bool:
    """Relay a response body while watching the client: a client that goes away ends the
    relay at once (the worker's connection is then closed, and it sees the tab gone)."""
    relay = asyncio.ensure_future(worker.body(head, client.send, has_body))
    watch = asyncio.ensure_future(_until_gone(client))
    try:
        await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relay, watch):
            task.cancel()
        await asyncio.gather(relay, watch, return_exceptions=True)
    if relay.cancelled():
        raise ConnectionError("the client went away")
    if isinstance(relay.exception(), HttpError):  # the response has begun: no answer now
        raise ConnectionError(str(relay.exception()))
    return relay.result()


async def _until_gone(client: Peer) -> None:
    """Return when the client's connection ends; what it sends meanwhile (a next request
    sent early) stays in its buffer."""
    while await client.fill():
        pass


async def _refuse(client: Peer, status: int, text: str) -> None:
    body = text.encode()
    reasons = {400: "Bad Request", 431: "Request Header Fields Too Large", 501: "Not Implemented"}
    reason = reasons.get(status, "Bad Gateway")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        await client.send(head + body)
    except ConnectionError:
        pass


async def serve(host: str, port: int, workers: list[str], drain_s: float) -> int:
    """Serve until SIGINT or SIGTERM; then let open streams end for up to `drain_s` seconds
    (the workers end them with their shutdown message); a second Ctrl-C ends at once."""
    front = Front(workers)
    open_connections: set[asyncio.Task] = set()

    async def on_connection(reader, writer):
        task = asyncio.current_task()
        open_connections.add(task)
        try:
            await front.serve(reader, writer)
        finally:
            open_connections.discard(task)

    try:
        server = await asyncio.start_server(on_connection, host, port, backlog=2048)
    except OSError as err:
        print(f"[ui] error: could not listen on {host}:{port} ({err})", file=sys.stderr, flush=True)
        return 2
    print(
        f"* Running on local URL: http://{host}:{port} ({len(workers)} UI workers behind it)",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stopping, forced = asyncio.Event(), asyncio.Event()

    def on_signal(number: int) -> None:
        if stopping.is_set() and number == signal.SIGINT:
            forced.set()
        stopping.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)
    await stopping.wait()
    server.close()
    front.stop()
    if open_connections:
        drained = asyncio.gather(*open_connections, return_exceptions=True)
        waiting = asyncio.ensure_future(forced.wait())
        await asyncio.wait({drained, waiting}, timeout=drain_s, return_when="FIRST_COMPLETED")
        waiting.cancel()
    for task in list(open_connections):
        task.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.ui_front", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--worker", action="append", required=True, help="a UI worker's URL")
    parser.add_argument(
        "--drain-seconds", type=float, default=5.0, help="how long a stop waits for open streams"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    return run(serve(args.host, args.port, args.worker, args.drain_seconds))


if __name__ == "__main__":
    sys.exit(main())
