"""The UI's front (`launch.ui_front`, Caddy) over real HTTP, in front of stand-in UI workers.

Each stand-in worker says who it is and what it was sent, streams server-sent events slowly
and notes when a client of its stream went away; the front runs as `app.py` starts it
(`python -m launch.ui_front`). Hostile input against the whole running app is
`test_public_edge.py`; the app's own UI behind the front is driven by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager

import httpx
import psutil
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from launch.ui_front import COOKIE
from tests.conftest import ROOT, free_port, recv_until, wait_for


class StandIn:
    """A worker that answers who it is; `/sse` streams 20 events 0.1 s apart."""

    def __init__(self, name: str, port: int | None = None):
        self.name = name
        self.closed_streams = 0
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app(), port=self.port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def app(self):
        async def who(request: Request):
            body = await request.body()
            return JSONResponse(
                {
                    "worker": self.name,
                    "path": request.url.path,
                    "body_bytes": len(body),
                    "body_crc": zlib.crc32(body),
                    "host": request.headers.get("host"),
                    "forwarded_for": request.headers.getlist("x-forwarded-for"),
                }
            )

        async def sse(request: Request):
            async def events():
                try:
                    for i in range(20):
                        yield f"data: {self.name} {i}\n\n"
                        await asyncio.sleep(0.1)
                finally:
                    self.closed_streams += 1

            return StreamingResponse(events(), media_type="text/event-stream")

        routes = [Route("/sse", sse), Route("/{path:path}", who, methods=["GET", "POST", "HEAD"])]
        return Starlette(routes=routes)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.server.started, 30, f"stand-in {self.name} up")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


class Mute:
    """A worker that reads each request and closes the connection without answering; it
    counts the requests that reached it."""

    def __init__(self):
        self.port = free_port()
        self.received = 0
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                if recv_until(conn, b"\r\n\r\n"):
                    self.received += 1


@contextmanager
def running_front(worker_urls: list[str], probe: str | None = "/ping", *flags: str):
    """`python -m launch.ui_front` before these workers (once `probe` answers 200): its URL
    and its process."""
    port = free_port()
    workers = [flag for url in worker_urls for flag in ("--worker", url)]
    process = subprocess.Popen(
        [sys.executable, "-m", "launch.ui_front", "--port", str(port), *workers, *flags],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            return httpx.get(url + probe, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def listens():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(answers if probe else listens, 30, "the front answering")
        yield url, process
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def workers():
    with StandIn("w0") as w0, StandIn("w1") as w1:
        yield [w0, w1]


@pytest.fixture(scope="module")
def front(workers):
    with running_front([f"http://127.0.0.1:{w.port}" for w in workers]) as (url, _):
        yield url


def visitor_cookies(front: str) -> dict[str, str]:
    """The affinity cookie of each worker, as new visitors are given them."""
    found: dict[str, str] = {}
    for _ in range(6):
        with httpx.Client(base_url=front) as browser:
            answer = browser.get("/")
            found[answer.json()["worker"]] = answer.cookies[COOKIE]
    return found


def test_new_visitors_take_turns_and_each_is_kept_on_its_worker_by_a_cookie(front):
    seen = []
    for _ in range(4):
        with httpx.Client(base_url=front) as browser:  # a browser keeps the cookies it is given
            first = browser.get("/")
            assert COOKIE in first.cookies, first.headers
            name = first.json()["worker"]
            for path in ("/config", "/gradio_api/queue/data", "/assets/x.js"):
                again = browser.get(path)
                assert again.json()["worker"] == name, path
                assert COOKIE not in again.cookies  # set once, not on every answer
            seen.append(name)
    assert sorted(set(seen)) == ["w0", "w1"] and seen[0] != seen[1], seen


def test_a_visitor_cannot_pick_a_worker_by_inventing_a_cookie(front):
    """The cookie is a keyed hash of the worker: a made-up value is a new visitor's (given a
    real cookie), and the real values do not name the workers' addresses or numbers."""
    real = visitor_cookies(front)
    assert set(real) == {"w0", "w1"}
    for value in real.values():
        assert len(value) >= 32 and value not in ("0", "1")
    answer = httpx.get(front + "/", headers={"Cookie": f"{COOKIE}=0"})
    assert answer.status_code == 200
    assert answer.cookies[COOKIE] in real.values()


def test_requests_on_one_connection_are_routed_one_by_one(front):
    """A proxy in front (the share link's tunnel) may carry several people's requests over
    one connection: each goes to its own worker, and the connection stays usable."""
    cookies = visitor_cookies(front)
    with httpx.Client(base_url=front) as shared:
        names = []
        for worker in ("w0", "w1", "w1", "w0", "w1"):
            shared.cookies.clear()
            answer = shared.get("/config", headers={"Cookie": f"{COOKIE}={cookies[worker]}"})
            names.append(answer.json()["worker"])
        assert names == ["w0", "w1", "w1", "w0", "w1"]


def test_clients_without_cookies_reach_one_worker_for_both_steps_of_an_api_call(front):
    """curl calling Gradio's two-step API (POST the call, GET its events) keeps no cookies:
    on those paths the caller's address decides, so both steps reach one worker."""
    calls = ["/gradio_api/call/chat", "/gradio_api/call/chat/ev1", "/gradio_api/queue/join"]
    names = {httpx.post(front + path, json={"data": []}).json()["worker"] for path in calls}
    names |= {httpx.get(front + "/gradio_api/queue/data").json()["worker"] for _ in range(3)}
    assert len(names) == 1, names


def test_bodies_chunked_or_not_and_the_host_header_reach_the_worker_whole(front):
    def pieces():
        for i in range(50):
            yield bytes([i]) * 1000

    # The expected sizes and CRC-32s are written out (worked out once from the bytes sent),
    # not derived from the same generator that made the request.
    chunked = httpx.post(front + "/upload", content=pieces())
    assert chunked.status_code == 200, chunked.text
    assert "content-length" not in chunked.request.headers  # it really went chunked
    received = chunked.json()
    assert (received["body_bytes"], received["body_crc"]) == (50_000, 1_274_450_707), received
    big = bytes(range(256)) * 8192  # 2 MiB: past the front's buffer, streamed on
    answer = httpx.post(front + "/gradio_api/upload", content=big)
    assert answer.status_code == 200, answer.text
    received = answer.json()
    assert (received["body_bytes"], received["body_crc"]) == (2_097_152, 4_071_163_044), received
    assert received["host"] == front.split("//", 1)[1]  # the page's own address


def test_the_visitors_address_reaches_the_worker_and_a_forged_one_does_not(front):
    answer = httpx.get(front + "/who", headers={"X-Forwarded-For": "6.6.6.6, 7.7.7.7"})
    assert answer.json()["forwarded_for"] == ["127.0.0.1"]


def test_events_stream_through_as_they_come_and_a_closed_tab_closes_the_worker_stream(
    front, workers
):
    cookie = {"Cookie": f"{COOKIE}={visitor_cookies(front)['w1']}"}
    before = workers[1].closed_streams
    began = time.monotonic()
    with httpx.stream("GET", front + "/sse", headers=cookie, timeout=10) as stream:
        lines = stream.iter_lines()
        first = next(line for line in lines if line)
        first_at = time.monotonic() - began
        assert first == "data: w1 0"
        second = next(line for line in lines if line)
        assert second == "data: w1 1"
    # The whole stream takes 2 s; the first event came at once, and leaving after two closed
    # the stream at the worker too (as Gradio needs to see a tab go away).
    assert first_at < 1.0, first_at
    wait_for(lambda: workers[1].closed_streams > before, 5, "the worker's stream closed")
    assert time.monotonic() - began < 1.9


def test_a_request_that_reached_a_worker_is_never_sent_again():
    """A worker that closes without answering: the visitor gets a 502 with Retry-After, and
    the worker saw the request once (a POST would otherwise send a chat twice)."""
    mute = Mute()
    with running_front([f"http://127.0.0.1:{mute.port}"], None) as (url, _):
        for method in ("POST", "GET"):
            before = mute.received
            answer = httpx.request(method, url + "/gradio_api/queue/join", content=b"{}")
            assert answer.status_code == 502 and answer.headers["retry-after"], answer.text
            assert answer.json()["code"] == "not_ready", answer.text
            assert mute.received == before + 1, method


def test_the_front_lets_go_of_an_idle_worker_connection_before_the_worker_does(workers):
    """A worker (uvicorn, keep-alive 5 s) closes an idle connection on its own; a request the
    front sent on it at that moment would fail and is never resent. So the front closes its
    idle connections to the workers first: held just after a request, gone 3 s later."""
    urls = [f"http://127.0.0.1:{w.port}" for w in workers]
    ports = {w.port for w in workers}
    with running_front(urls) as (url, process):
        front = psutil.Process(process.pid)

        def to_workers() -> int:
            return sum(
                1
                for conn in front.net_connections("tcp")
                if conn.raddr and conn.raddr[1] in ports and conn.status == "ESTABLISHED"
            )

        assert httpx.post(url + "/gradio_api/queue/join", json={}).status_code == 200
        assert to_workers() >= 1
        time.sleep(3.0)
        assert to_workers() == 0


def test_a_worker_that_is_down_loses_no_visitor(tmp_path):
    port = free_port()  # nothing listens there
    with StandIn("up") as up:
        urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{up.port}"]
        with running_front(urls, "/") as (url, _):
            for _ in range(4):  # new visitors all reach the worker that is up
                assert httpx.get(url + "/").json()["worker"] == "up"


def test_requests_wait_for_workers_that_are_starting_instead_of_failing():
    """The front may be up before its workers: a request waits for one (up to the start
    wait), and is answered as soon as it listens."""
    port = free_port()
    with running_front([f"http://127.0.0.1:{port}"], None) as (url, _):
        began = time.monotonic()
        later = threading.Timer(2.0, lambda: StandIn("late", port).__enter__())
        later.start()
        answer = httpx.get(url + "/config", timeout=30)
        assert answer.status_code == 200 and answer.json()["worker"] == "late"
        assert 1.5 < time.monotonic() - began < 10


def test_when_every_worker_is_full_the_answer_is_a_503_with_retry_after(workers):
    urls = [f"http://127.0.0.1:{w.port}" for w in workers]
    flags = ("--max-requests", "1", "--start-wait-seconds", "1")
    with running_front(urls, None, *flags) as (url, _):
        cookies = visitor_cookies(url)
        with (
            httpx.stream("GET", url + "/sse", headers={"Cookie": f"{COOKIE}={cookies['w0']}"}),
            httpx.stream("GET", url + "/sse", headers={"Cookie": f"{COOKIE}={cookies['w1']}"}),
        ):
            full = httpx.get(url + "/config", timeout=10)
            assert full.status_code == 503, full.text
            assert full.headers["retry-after"] == "5" and "try again" in full.json()["error"]
            assert full.json()["code"] == "busy"
        wait_for(lambda: httpx.get(url + "/config").status_code == 200, 10, "served again")


def test_the_front_has_no_admin_port_and_refuses_a_taken_port(workers):
    urls = [f"http://127.0.0.1:{w.port}" for w in workers]
    with running_front(urls) as (url, process):
        with pytest.raises(OSError):  # Caddy's admin API (2019) would reconfigure it
            socket.create_connection(("127.0.0.1", 2019), timeout=1).close()
        port = url.rsplit(":", 1)[1]
        taken = subprocess.run(
            [sys.executable, "-m", "launch.ui_front", "--port", port, "--worker", urls[0]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert taken.returncode == 2 and "could not listen" in taken.stdout


def test_auto_takes_two_workers_on_a_small_machine_and_one_per_four_cores_up_to_eight():
    """`--ui-workers auto`: two on 1-8 cores (each worker is a scheduler's share beside a busy
    engine), one per four cores above, at most eight."""
    from launch.ui_process import auto_workers

    assert [auto_workers(n) for n in (1, 2, 4, 8, 12, 16, 32, 64, 128)] == [
        2,
        2,
        2,
        2,
        3,
        4,
        8,
        8,
        8,
    ]


def test_the_fronts_own_refusals_carry_the_servers_codes(workers):
    """What the front refuses itself is answered in the server's shape, so a client tells the
    cases apart by code: a method it never relays, a declared body over the cap, a body that
    grows past the cap while it is read."""
    urls = [f"http://127.0.0.1:{w.port}" for w in workers]
    with running_front(urls, None) as (url, _):
        trace = httpx.request("TRACE", url + "/")
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n")
            declared = recv_until(conn, b"}\n")
        grown = httpx.post(url + "/upload", content=iter([b"x" * 1024 * 1024] * 9))
    assert (trace.status_code, trace.json()["code"]) == (405, "bad_request")
    assert declared.startswith(b"HTTP/1.1 413") and b'"code":"too_large"' in declared, declared
    assert (grown.status_code, grown.json()["code"]) == (413, "too_large"), grown.text
