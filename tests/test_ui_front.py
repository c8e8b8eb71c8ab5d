"""The UI's front (`launch.ui_front`) over real HTTP, in front of two stand-in UI workers.

Each stand-in worker says who it is, streams server-sent events slowly, echoes bodies and notes
when a client of its stream went away; the front runs as `app.py` starts it (`python -m
launch.ui_front`). The app's own UI behind the front (Gradio workers, the browser) is driven by
the end-to-end tests, whose shared app runs two UI workers.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from launch.ui_front import COOKIE, session_of
from tests.conftest import ROOT, free_port, wait_for


class StandIn:
    """A worker that answers who it is; `/sse` streams 20 events 0.1 s apart."""

    def __init__(self, name: str):
        self.name = name
        self.closed_streams = 0
        self.port = free_port()
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

        routes = [Route("/sse", sse), Route("/{path:path}", who, methods=["GET", "POST"])]
        return Starlette(routes=routes)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.server.started, 30, f"stand-in {self.name} up")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def workers():
    with StandIn("w0") as w0, StandIn("w1") as w1:
        yield [w0, w1]


@contextmanager
def running_front(worker_urls: list[str], probe: str):
    """`python -m launch.ui_front` before these workers, once `probe` answers 200: its URL."""
    port = free_port()
    flags = [flag for url in worker_urls for flag in ("--worker", url)]
    process = subprocess.Popen(
        [sys.executable, "-m", "launch.ui_front", "--port", str(port), *flags], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            return httpx.get(url + probe, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 30, "the front answering")
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def front(workers):
    with running_front([f"http://127.0.0.1:{w.port}" for w in workers], "/ping") as url:
        yield url


def test_new_visitors_take_turns_and_each_is_kept_on_its_worker_by_a_cookie(front):
    seen = []
    for _ in range(4):
        with httpx.Client(base_url=front) as browser:  # a browser keeps the cookies it is given
            first = browser.get("/")
            assert COOKIE in first.cookies, first.headers
            name = first.json()["worker"]
            assert first.cookies[COOKIE] == name[1:]
            for path in ("/config", "/gradio_api/queue/data", "/assets/x.js"):
                again = browser.get(path)
                assert again.json()["worker"] == name, path
                assert COOKIE not in again.cookies  # set once, not on every answer
            seen.append(name)
    assert sorted(set(seen)) == ["w0", "w1"] and seen[0] != seen[1], seen


def test_a_client_without_cookies_stays_with_its_session(front):
    """gradio_client-like callers without a cookie jar: the session hash decides, the same
    worker for the event's POST (JSON body), its event stream (query) and its heartbeat."""
    for session in ("abc123", "zz9", "session-42", "q"):
        expected = f"w{zlib.crc32(session.encode()) % 2}"
        join = httpx.post(
            front + "/gradio_api/queue/join", json={"data": [], "session_hash": session}
        )
        data = httpx.get(front + "/gradio_api/queue/data", params={"session_hash": session})
        beat = httpx.get(front + f"/gradio_api/heartbeat/{session}")
        assert [r.json()["worker"] for r in (join, data, beat)] == [expected] * 3, session


def test_session_of_reads_query_path_and_body():
    assert session_of("/gradio_api/queue/data", "session_hash=h1&x=2", None) == "h1"
    assert session_of("/gradio_api/heartbeat/h2", "", None) == "h2"
    assert session_of("/gradio_api/queue/join", "", b'{"session_hash": "h3"}') == "h3"
    assert session_of("/gradio_api/queue/join", "", b"not json") is None
    assert session_of("/gradio_api/queue/join", "", b'{"session_hash": 7}') is None
    assert session_of("/", "", None) is None


def test_requests_on_one_connection_are_routed_one_by_one(front):
    """A proxy in front (the share link's tunnel) may carry several people's requests over
    one connection: each goes to its own worker, and the connection stays usable."""
    with httpx.Client(base_url=front) as shared:
        names = [
            shared.get("/config", headers={"Cookie": f"{COOKIE}={k}"}).json()["worker"]
            for k in (0, 1, 1, 0, 1)
        ]
        assert names == ["w0", "w1", "w1", "w0", "w1"]
        head = shared.head("/x", headers={"Cookie": f"{COOKIE}=1"})  # no body follows a HEAD
        assert head.status_code == 200
        again = shared.get("/y", headers={"Cookie": f"{COOKIE}=0"})
        assert again.json() == {**again.json(), "worker": "w0", "path": "/y"}


def test_a_chunked_request_body_arrives_whole(front):
    def pieces():
        for i in range(50):
            yield bytes([i]) * 1000

    cookie = {"Cookie": f"{COOKIE}=1"}
    answer = httpx.post(front + "/upload", content=pieces(), headers=cookie)
    expected = b"".join(pieces())
    assert answer.json()["body_bytes"] == len(expected)
    assert answer.json()["body_crc"] == zlib.crc32(expected)


def test_events_stream_through_as_they_come_and_a_closed_tab_closes_the_worker_stream(
    front, workers
):
    cookie = {"Cookie": f"{COOKIE}=1"}
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


def test_bodies_and_the_host_header_reach_the_worker_whole(front):
    big = bytes(range(256)) * 4096  # 1 MiB: streamed, not read whole by the front
    cookie = {"Cookie": f"{COOKIE}=0"}
    answer = httpx.post(front + "/gradio_api/upload", content=big, headers=cookie)
    assert answer.json()["body_bytes"] == len(big)
    assert answer.json()["body_crc"] == zlib.crc32(big)
    assert answer.json()["host"] == front.split("//", 1)[1]  # the page's own address


def test_a_worker_that_is_down_loses_no_new_visitor_and_tells_its_own(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with StandIn("up") as up, running_front([down, f"http://127.0.0.1:{up.port}"], "/") as url:
        for _ in range(4):  # new visitors all reach the worker that is up
            assert httpx.get(url + "/").json()["worker"] == "up"
        lost = httpx.get(url + "/config", headers={"Cookie": f"{COOKIE}=0"})
        assert lost.status_code == 502 and "reload the page" in lost.text


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
