"""The public ports under attack: what strangers can send to the running app.

One app of this module's own (two UI workers behind the front, the HTTP API beside it) is sent
what a curious student or a script kiddie would send: broken framing, oversized heads and
bodies, deeply nested JSON, endless and stalled bodies, slow heads, thousands of idle
connections. Each gets a 4xx (or its connection closed) within the front's timeouts, the
front's memory stays bounded, and a normal visitor still gets the page within a second after
each. Last, Ctrl-C to the app's process group still ends everything in seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request

import psutil
import pytest

from launch.ui_front import FrontLimits
from tests.conftest import private_app, recv_until, wait_for

pytestmark = pytest.mark.slow

LIMITS = FrontLimits()


@pytest.fixture(scope="module")
def target(tmp_path_factory, questions, tiny_model_dir):
    yield from private_app(tmp_path_factory, "edge", "--ui-workers", "2")


def address(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def exchange(url: str, data: bytes, wait: float = 15.0) -> tuple[str, float]:
    """Send raw bytes; (the status line of the answer, or CLOSED / TIMEOUT; seconds taken)."""
    began = time.monotonic()
    with socket.create_connection(address(url), timeout=wait) as conn:
        try:
            conn.sendall(data)
            answer = recv_until(conn, b"\r\n")
        except TimeoutError:
            return "TIMEOUT", time.monotonic() - began
        except (ConnectionResetError, BrokenPipeError):
            return "CLOSED", time.monotonic() - began
    line = answer.split(b"\r\n", 1)[0].decode("latin-1") or "CLOSED"
    return line, time.monotonic() - began


def status_of(line: str) -> int | None:
    parts = line.split(" ")
    return int(parts[1]) if line.startswith("HTTP/1.1 ") and parts[1].isdigit() else None


def page_in_a_second(target) -> float:
    began = time.monotonic()
    with urllib.request.urlopen(target.ui_url + "/", timeout=5) as response:
        assert response.status == 200
        response.read()
    took = time.monotonic() - began
    assert took < 1.0, f"the page took {took:.2f} s"
    return took


def front_process(target) -> psutil.Process:
    for child in psutil.Process(target.process.pid).children(recursive=True):
        if "caddy" in child.name():
            return child
    pytest.fail("no front process")


HEAD = b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
# name -> (bytes, the statuses that are a right answer)
MALFORMED = {
    "negative chunk size": (CHUNKED + b"-6\r\na", {400}),
    "huge chunk size": (CHUNKED + b"ffffffffffffffffffffffff\r\na", {400}),
    "non-hex chunk size": (CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n", {400}),
    "signed chunk size": (CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n", {400}),
    "0x chunk size": (CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", {400}),
    "underscored chunk size": (CHUNKED + b"1_0\r\n" + b"h" * 16 + b"\r\n0\r\n\r\n", {400}),
    "conflicting lengths": (HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", {400}),
    "negative length": (HEAD + b"Content-Length: -5\r\n\r\nabc", {400}),
    "hex length": (HEAD + b"Content-Length: 0x5\r\n\r\nhello", {400}),
    "unknown transfer coding": (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {501}),
    "two transfer codings": (
        HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        {501},
    ),
    "space before colon": (HEAD + b"Content-Length : 5\r\n\r\nhello", {400}),
    "no host": (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", {400}),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    "NUL in a header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", {400}),
    "control byte in the method": (b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "unknown HTTP version": (b"GET / HTTP/7.0\r\nHost: x\r\n\r\n", {400, 505}),
    "oversized head": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        {431},
    ),
    "oversized URL": (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {414, 431}),
    "declared body past the cap": (HEAD + b"Content-Length: 99999999999\r\n\r\nabc", {413}),
    "CONNECT through the front": (
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n",
        {405},
    ),
    "TRACE": (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", {405}),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_get_a_4xx_at_once_and_the_page_keeps_serving(target, name):
    data, right = MALFORMED[name]
    line, took = exchange(target.ui_url, data)
    assert status_of(line) in right, (name, line)
    assert took < 2.0, (name, took)
    page_in_a_second(target)


def test_tolerated_framing_is_read_one_way_only(target):
    """What HTTP/1.1 lets a server accept (bare LF line ends, obs-fold, a length beside
    chunked) is read as one request, re-framed by the front: no second request is smuggled
    to a worker behind it."""
    smuggle = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    for data in (
        b"GET / HTTP/1.1\nHost: x\nConnection: close\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n",
        HEAD
        + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        + smuggle,
    ):
        with socket.create_connection(address(target.ui_url), timeout=15) as conn:
            conn.sendall(data)
            answer = b""
            while piece := conn.recv(65536):
                answer += piece
        assert answer.count(b"HTTP/1.1 ") == 1, answer[:300]
    page_in_a_second(target)


def test_deeply_nested_json_is_refused_with_a_4xx_on_both_ports(target):
    deep = b"[" * 100_000 + b"]" * 100_000
    for url in (
        target.ui_url + "/gradio_api/queue/join",
        target.ui_url + "/gradio_api/call/chat",
        target.api_url + "/predict",
        target.api_url + "/v1/chat/completions",
    ):
        request = urllib.request.Request(
            url, data=deep, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert 400 <= refused.value.code < 500, (url, refused.value.code)
    assert "RecursionError" not in target.log.read_text(errors="replace")
    page_in_a_second(target)


def test_an_endless_body_is_cut_off_at_the_cap_and_the_fronts_memory_stays_bounded(target):
    front = front_process(target)
    before = front.memory_info().rss
    with socket.create_connection(address(target.ui_url), timeout=30) as conn:
        conn.sendall(CHUNKED)
        piece = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        sent, answer = 0, b""
        try:
            while sent < 64 * 2**20:  # 64 MiB, eight times the cap
                conn.sendall(piece)
                sent += 65536
        except (ConnectionResetError, BrokenPipeError):
            pass
        try:
            answer = conn.recv(4096)
        except ConnectionResetError:
            pass
    assert answer == b"" or status_of(answer.split(b"\r\n")[0].decode()) == 413, answer[:100]
    assert sent < 64 * 2**20 or answer, "the front took 64 MiB without a word"
    grown = (front.memory_info().rss - before) / 2**20
    assert grown < 48, f"the front grew {grown:.0f} MiB for one endless body"
    page_in_a_second(target)


def test_a_slow_head_is_cut_off_at_the_header_timeout(target):
    began = time.monotonic()
    with socket.create_connection(address(target.ui_url), timeout=30) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        closed = False
        while time.monotonic() - began < LIMITS.header_timeout_s + 10:
            try:
                conn.sendall(b"X-Slow: 1\r\n")
                if conn.recv(4096, socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            page_in_a_second(target)  # others are served meanwhile
            time.sleep(1)
    took = time.monotonic() - began
    assert closed and took < LIMITS.header_timeout_s + 3, took


def to_workers(target) -> int:
    """The front's connections to the workers (those it opened: not on its own port)."""
    front, port = front_process(target), address(target.ui_url)[1]
    return sum(
        1
        for conn in front.net_connections("tcp")
        if conn.raddr and conn.status == "ESTABLISHED" and conn.laddr[1] != port
    )


def test_stalled_bodies_hold_no_worker_and_the_page_keeps_serving(target):
    """Bodies that never finish are read by the front, not by a worker: with 200 of them
    open, the front holds no more connections to the workers than before, and the page is
    served at once."""
    before = to_workers(target)
    stalled = []
    try:
        for _ in range(200):
            conn = socket.create_connection(address(target.ui_url), timeout=10)
            conn.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b"{" * 10)
            stalled.append(conn)
        time.sleep(1)
        assert to_workers(target) <= before + 4, (before, to_workers(target))
        for _ in range(3):
            page_in_a_second(target)
    finally:
        for conn in stalled:
            conn.close()


def test_thousands_of_idle_connections_leave_the_page_served_within_a_second(target):
    front = front_process(target)
    before = front.memory_info().rss
    idle = []
    try:
        for _ in range(3000):
            idle.append(socket.create_connection(address(target.ui_url), timeout=10))
        half = [conn for conn in idle[::2]]
        for conn in half:  # half of them start a request and never finish its head
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        took = [page_in_a_second(target) for _ in range(5)]
        grown = (front.memory_info().rss - before) / 2**20
        assert grown < 200, f"the front grew {grown:.0f} MiB for 3000 idle connections"
        # the front lets them go at its header timeout: they are closed, not kept forever
        time.sleep(LIMITS.header_timeout_s + 2)
        still_open = 0
        for conn in half:
            conn.settimeout(0.5)
            try:
                conn.recv(4096)  # b"" (closed) or a last answer before the close
            except ConnectionResetError:
                pass
            except TimeoutError:
                still_open += 1
        assert still_open == 0, f"{still_open} half-sent heads still open"
    finally:
        for conn in idle:
            conn.close()
    print(f"\n3000 idle connections: page in {max(took):.2f} s at most")


def test_the_api_port_survives_the_same(target):
    """The HTTP API is uvicorn's (httptools parses it, as under `vllm serve`): broken framing
    is refused, a large head is read (httptools sets no limit of its own), and the port
    keeps serving."""
    chunk = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\na"
    tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    for data, right in ((chunk, {400}), (tls, {400}), (big, {200, 400, 431})):
        line, _ = exchange(target.api_url, data)
        assert line == "CLOSED" or status_of(line) in right, line
    with urllib.request.urlopen(target.api_url + "/", timeout=5) as response:
        assert response.status == 200


def test_ctrl_c_still_ends_the_app_in_seconds_after_all_that(target):
    """Last in this module: SIGINT to the whole process group, as a terminal sends it."""
    processes = psutil.Process(target.process.pid).children(recursive=True)
    assert len(processes) > 3  # the engine's, two workers, the front
    began = time.monotonic()
    os.killpg(target.process.pid, signal.SIGINT)
    status = target.process.wait(timeout=30)
    took = time.monotonic() - began
    assert status == 0 and took < 15, (status, took)
    wait_for(
        lambda: not [p for p in processes if p.is_running() and p.status() != "zombie"],
        10,
        "no process of the app left",
    )
