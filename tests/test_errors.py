"""The error contract: every refusal carries its code (`engine.types.ErrorCode`), every 503
`Retry-After`, the UI decides by the code, admission reserves room, and one benchmark runs at a
time over every UI worker even when two requests for one arrive together.

The contract tests run the real HTTP apps in-process (httpx's ASGI transport) over an engine
service that is never started, set to each state by hand: they need no vLLM. The benchmark
race runs on the shared test engine, over the private Unix socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict

import httpx
import pytest

from engine.types import EngineBusy, EngineStatus, ErrorCode, ServerStopping
from tests.conftest import TEST_PROFILE, recv_until, wait_for

TOKEN = "tok"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "thinking": False, "params": {}}
PAIRS = [["什么是 warp?", "线程束"], ["什么是 CUDA?", "并行计算平台"]]
BENCHMARK = {"pairs": PAIRS, "spec": {"workload": "full", "limit": 2, "max_new_tokens": 4}}


# ---- the contract, over an engine that is never started --------------------------------------
class StandInVllm:
    """vLLM's OpenAI app as the guard sees it: built (`app`), answering `status`."""

    def __init__(self, status: int = 200):
        self.app, self.status = self, status

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


class LiveVllm:
    """vLLM's AsyncLLM as admission sees it: alive."""

    errored = False


@pytest.fixture
def idle():
    """An EngineService that is never started: its engine says 'idle (not started)'."""
    from engine import EngineService, make_config

    return EngineService(make_config(TEST_PROFILE, model="tiny-random", max_queued_requests=4))


def full(idle) -> None:
    """Make the engine look ready with every slot of its admission limit taken."""
    engine = idle.engine
    engine.life.llm = LiveVllm()
    engine.life.status = EngineStatus("ready", "ready")
    engine.unfinished_requests = lambda: engine.config.admission_limit


def ask(app, method: str, path: str, body=None, token: str | None = TOKEN) -> httpx.Response:
    """One request to an ASGI app, in-process."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path, json=body, headers=headers)

    return asyncio.run(send())


def apps(idle, vllm_status: int | None = None):
    """(public app, private app, a public app with a stand-in vLLM app behind the guard)."""
    from server import build_apps
    from server.app import GuardedApp
    from server.guard import Guard

    public, private = build_apps(idle, TOKEN, 8, openai=False)
    vllm = StandInVllm(vllm_status or 200)
    if vllm_status is None:
        vllm.app = None  # not built yet
    guarded = GuardedApp(Guard(idle, None), public.own, public.own_paths, vllm, False)
    return public, private, guarded


def course_error(response: httpx.Response, status: int, code: ErrorCode) -> dict:
    """The course shape's error, checked: status, code, and Retry-After on a 503."""
    answer = response.json()
    assert response.status_code == status and answer["code"] == code, (response, answer)
    assert isinstance(answer["error"], str) and answer["error"]
    if status == 503:
        assert response.headers.get("retry-after") == "5", response.headers
    return answer


def openai_error(response: httpx.Response, status: int, code: ErrorCode) -> dict:
    """vLLM's shape, checked: its fields, the status as `code`, our code as `reason`."""
    error = response.json()["error"]
    assert response.status_code == status, (response, error)
    assert set(error) == {"message", "type", "param", "code", "reason"}, error
    assert error["code"] == status and error["reason"] == code, error
    if status == 503:
        assert response.headers.get("retry-after") == "5", response.headers
    return error


def test_an_engine_not_ready_is_503_not_ready_with_retry_after_on_every_route(idle):
    public, private, guarded = apps(idle)
    course_error(ask(public, "POST", "/predict", {"prompt": "x"}), 503, ErrorCode.NOT_READY)
    course_error(ask(private, "POST", "/internal/chat", CHAT), 503, ErrorCode.NOT_READY)
    course_error(ask(private, "POST", "/internal/benchmark", BENCHMARK), 503, "not_ready")
    # vLLM's routes before vLLM's app is built, and the guard in front of them
    openai_error(ask(guarded, "GET", "/v1/models"), 503, ErrorCode.NOT_READY)
    idle.engine.life.status = EngineStatus("loading", "loading")
    _, _, guarded = apps(idle, vllm_status=200)
    openai_error(ask(guarded, "POST", "/v1/chat/completions", {}), 503, ErrorCode.NOT_READY)


def test_a_server_shutting_down_is_503_shutting_down_with_retry_after(idle):
    public, private, guarded = apps(idle, vllm_status=200)
    idle.closing = True
    course_error(ask(private, "POST", "/internal/restart"), 503, ErrorCode.SHUTTING_DOWN)
    course_error(ask(private, "POST", "/internal/chat", CHAT), 503, ErrorCode.SHUTTING_DOWN)
    openai_error(ask(guarded, "POST", "/v1/completions", {}), 503, ErrorCode.SHUTTING_DOWN)
    idle.closing = False
    idle.engine.life.ended_by = ServerStopping()  # the engine's own refusal, past the guard
    course_error(ask(public, "POST", "/predict", {"prompt": "x"}), 503, "shutting_down")


def test_past_the_admission_limit_every_route_answers_503_busy_with_retry_after(idle):
    public, private, guarded = apps(idle, vllm_status=200)
    full(idle)
    course_error(ask(public, "POST", "/predict", {"prompt": "x"}), 503, ErrorCode.BUSY)
    course_error(ask(private, "POST", "/internal/chat", CHAT), 503, ErrorCode.BUSY)
    course_error(ask(private, "POST", "/internal/benchmark", BENCHMARK), 503, ErrorCode.BUSY)
    openai_error(ask(guarded, "POST", "/v1/chat/completions", {}), 503, ErrorCode.BUSY)
    # A refused benchmark holds no claim: once there is room, the next is not told one runs.
    idle.engine.unfinished_requests = lambda: 0
    assert ask(private, "POST", "/internal/benchmark/cancel", {}).json() == {"run": "none"}


def test_a_503_from_vllm_itself_gets_retry_after(idle):
    *_, guarded = apps(idle, vllm_status=503)
    full(idle)
    idle.engine.unfinished_requests = lambda: 0
    response = ask(guarded, "POST", "/v1/chat/completions", {})
    assert response.status_code == 503 and response.headers.get("retry-after") == "5"


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        ("/predict", "not json", 422, ErrorCode.BAD_REQUEST),
        ("/predict", {"prompt": ["q"] * 1025}, 413, ErrorCode.TOO_LARGE),
        ("/internal/chat", {"messages": []}, 422, ErrorCode.BAD_REQUEST),
        ("/internal/benchmark", {"pairs": 3}, 422, ErrorCode.BAD_REQUEST),
        ("/internal/benchmark/cancel", {"owner": 3}, 422, ErrorCode.BAD_REQUEST),
    ],
)
def test_bad_requests_carry_bad_request_or_too_large(idle, path, body, status, code):
    public, private, _ = apps(idle)
    full(idle)
    idle.engine.unfinished_requests = lambda: 0
    app = public if path == "/predict" else private
    course_error(ask(app, "POST", path, body), status, code)


def test_the_token_and_turned_off_routes_carry_their_codes(idle):
    public, *_ = apps(idle)
    answer = ask(public, "POST", "/predict", {"prompt": "x"}, token="wrong")
    course_error(answer, 401, ErrorCode.UNAUTHORIZED)
    assert answer.headers.get("www-authenticate") == "Bearer"
    course_error(ask(public, "POST", "/scale_elastic_ep", {}), 404, ErrorCode.NOT_FOUND)


def test_stream_lines_carry_the_code_and_the_ui_reads_it():
    from server.errors import error_line
    from ui.backend import BackendError

    line = asdict(error_line(EngineBusy("server busy: 4 requests in the engine, limit 4")))
    assert line == {
        "error": "server busy: 4 requests in the engine, limit 4",
        "code": "busy",
        "status": 503,
    }
    raised = BackendError.from_answer(json.loads(json.dumps(line)), line["status"])
    assert raised.busy and raised.code == ErrorCode.BUSY and raised.status == 503


def test_the_ui_decides_by_the_code_never_by_the_wording():
    from ui.backend import BackendError
    from ui.chat import STOPPING, error_text

    worded = BackendError("busy busy: the server is shutting down", 503, "not_ready")
    assert not worded.busy and not worded.shutting_down
    assert error_text(worded) == str(worded)
    assert BackendError("anything", 503, "busy").busy
    assert error_text(BackendError("anything", 503, "shutting_down")) == STOPPING
    assert not BackendError("server busy", 503).busy  # no code: not a busy refusal


def test_admission_reserves_room_until_let_go(idle):
    """Two callers racing for the last slot before either has reached vLLM's queue: the
    second is refused, and the room comes back once the first lets go."""
    full(idle)
    engine = idle.engine
    engine.unfinished_requests = lambda: 0  # nothing in vLLM yet
    limit = engine.config.admission_limit
    first = engine.admit(limit - 1)
    last = engine.admit(1)
    with pytest.raises(EngineBusy) as refused:
        engine.admit(1)
    assert refused.value.code == ErrorCode.BUSY and refused.value.http_status == 503
    last.release()
    last.release()  # letting go twice gives back the room once
    with engine.admit(1):
        with pytest.raises(EngineBusy):
            engine.admit(1)
    first.release()
    engine.admit(limit).release()


# ---- one benchmark at a time, over the private socket, on the real engine ---------------------
@pytest.fixture(scope="module")
def private_socket(service, tmp_path_factory) -> str:
    """The private app on a Unix socket, served on the shared test engine's loop."""
    from server import HttpServers, build_apps

    _, private = build_apps(service, None, 8, openai=False)
    path = str(tmp_path_factory.mktemp("private") / "server.sock")
    servers = HttpServers(service)
    servers.add(private, uds=path)
    servers.start()
    yield path
    servers.stop()


@contextmanager
def loop_held(service):
    """Keep the engine's loop busy for the block, as a loaded server's is: whatever arrives
    meanwhile is handled in the same turn of the loop once it is free."""
    started, free = threading.Event(), threading.Event()

    async def hold() -> None:
        started.set()
        free.wait(10)  # blocks the loop on purpose

    done = service.submit(hold())
    assert started.wait(10)
    try:
        yield
        time.sleep(0.2)
    finally:
        free.set()
        done.result(10)


def benchmark_request(body: dict) -> bytes:
    data = json.dumps(body).encode()
    head = (
        "POST /internal/benchmark HTTP/1.1\r\nHost: server\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def answer_of(conn: socket.socket) -> tuple[int, bytes]:
    """(status, everything after the head) of an answer: read to its end (a chunked stream's
    last chunk, or the Content-Length)."""
    data = recv_until(conn, b"\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if b"chunked" in head.lower():
        rest += recv_until(conn, b"0\r\n\r\n") if not rest.endswith(b"0\r\n\r\n") else b""
    else:
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += conn.recv(65536)
    return status, rest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_benchmarks_arriving_together_exactly_one_runs(service, private_socket):
    """Two requests for a benchmark reach the private API in the same moment (as from two UI
    workers): one runs, the other is told 409 `benchmark_running` before its response starts."""
    conns = []
    for _ in range(2):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(240)
        conn.connect(private_socket)
        conns.append(conn)
    try:
        time.sleep(0.3)  # both connections accepted
        with loop_held(service):
            for conn in conns:
                conn.sendall(benchmark_request(BENCHMARK))
        answers = [answer_of(conn) for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert sorted(status for status, _ in answers) == [200, 409], answers
    refused = next(body for status, body in answers if status == 409)
    assert json.loads(refused)["code"] == ErrorCode.BENCHMARK_RUNNING
    ran = next(body for status, body in answers if status == 200)
    assert b'"result"' in ran, ran[-500:]
    assert_room_given_back(service)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_ui_is_told_benchmark_running_by_code(service, private_socket):
    """While one run streams, the UI's client gets BackendError with the code."""
    from ui.backend import Backend, BackendError

    backend = Backend(private_socket)
    long_run = {**BENCHMARK["spec"], "max_new_tokens": 900}  # still running when asked again

    async def both():
        first = backend.benchmark([tuple(p) for p in PAIRS], long_run)
        await anext(first)  # the run is under way
        try:
            with pytest.raises(BackendError) as refused:
                await anext(backend.benchmark([tuple(p) for p in PAIRS], BENCHMARK["spec"]))
        finally:
            await first.aclose()
        return refused.value

    refused = asyncio.run(both())
    assert refused.code == ErrorCode.BENCHMARK_RUNNING and refused.status == 409
    assert_room_given_back(service)


def assert_room_given_back(service) -> None:
    """Every admission has been let go once the runs' responses have ended."""
    wait_for(lambda: service.engine._admitted.value == 0, 30, "the admission count back at 0")
