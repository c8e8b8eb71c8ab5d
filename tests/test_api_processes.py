"""Several API processes (`--api-processes 2`): each its own client of vLLM's engine core.

One app, two API processes, two UI workers, on vLLM's CPU build:
- the API port is served by both (every response says which: `x-api-process`), and vLLM's
  `/metrics` counts the requests of both whichever answers;
- the one admission limit (`--max-queued-requests 6`) holds for the app as a whole: six
  streams open over both processes, a seventh is refused with 503 `busy` by either;
- each UI worker sends its chats to the private socket of the API process it was given, and a
  chat through the browser's path reaches the engine through that process;
- an API process killed outright (SIGKILL) is replaced on a spare slot while a stream on the
  other process goes on to its end; the replacement serves the port and its chats again;
- an engine restart stops the API processes first and starts new ones on the new engine;
- Ctrl-C to the app's process group ends every process of it, the API processes included,
  within seconds, with status 0.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time

import httpx
import psutil
import pytest

from tests.conftest import browser_chat, private_app, wait_for

API_PROCESS = "qwen3-demo API process"


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    yield from private_app(
        tmp_path_factory,
        "api-processes",
        "--api-processes",
        "2",
        "--ui-workers",
        "2",
        "--max-model-len",
        "1024",
        "--max-queued-requests",
        "6",
    )


def api_process_pids(app) -> dict[int, int]:
    """Position -> pid of the app's API processes (by their process title)."""
    found = {}
    for child in psutil.Process(app.process.pid).children(recursive=True):
        try:
            title = " ".join(child.cmdline()).strip()
        except psutil.Error:
            continue
        if title.startswith(API_PROCESS):
            found[int(title.rsplit(" ", 1)[-1])] = child.pid
    return found


def ui_workers(app) -> list[tuple[str, str]]:
    """(url, chat socket) of each UI worker, from its command line."""
    found = []
    for child in psutil.Process(app.process.pid).children(recursive=True):
        try:
            line = child.cmdline()
        except psutil.Error:
            continue
        if "-m" in line and "ui" in line and "--chat-socket" in line:
            port = line[line.index("--port") + 1]
            found.append((f"http://127.0.0.1:{port}", line[line.index("--chat-socket") + 1]))
    return sorted(found, key=lambda w: w[1])


def client_on(app, position: str, tries: int = 200) -> httpx.Client:
    """An HTTP client whose one kept-alive connection API process `position` accepted (new
    connections until one is)."""
    for _ in range(tries):
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client = httpx.Client(base_url=app.api_url, timeout=60, limits=limits)
        if client.get("/v1/models").headers["x-api-process"] == position:
            return client
        client.close()
    pytest.fail(f"API process {position} accepted none of {tries} new connections")


def completion(client: httpx.Client) -> str:
    """One short completion on `client`; which API process served it."""
    body = {"model": "tiny-random", "prompt": "GPU", "max_tokens": 4}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"]
    return response.headers["x-api-process"]


def completed_requests(app) -> float:
    """vLLM's finished-request count from `/metrics` (all finish reasons), on a new
    connection (either API process may answer)."""
    text = httpx.get(app.api_url + "/metrics", timeout=30).text
    pattern = r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$"
    return sum(float(x) for x in re.findall(pattern, text, re.M))


def test_the_api_port_is_served_by_every_api_process(two):
    assert set(api_process_pids(two)) == {1}
    for position in ("0", "1"):
        client = client_on(two, position)
        assert {completion(client) for _ in range(3)} == {position}
        client.close()


def test_metrics_count_the_requests_of_every_api_process(two):
    two.wait_idle()
    before = completed_requests(two)
    for position in ("0", "1"):
        client = client_on(two, position)
        assert [completion(client) for _ in range(6)] == [position] * 6
        client.close()
    # Whichever process answers /metrics, it counts all twelve.
    counts = {completed_requests(two) - before for _ in range(8)}
    assert counts == {12.0}, counts


def test_the_admission_limit_counts_every_api_process(two):
    two.wait_idle()
    held = [stream_on(two, position, max_tokens=900) for position in "010101"]
    try:
        for _, response in held:
            assert response.readline().startswith(b"data:")  # each is streaming
        for position in ("0", "1"):
            client = client_on(two, position)
            body = {"model": "tiny-random", "prompt": "GPU", "max_tokens": 4}
            refused = client.post("/v1/completions", json=body)
            client.close()
            assert refused.status_code == 503, refused.text
            assert refused.headers["x-api-process"] == position
            assert refused.json()["error"]["reason"] == "busy", refused.text
    finally:
        for conn, _ in held:
            conn.close()
    two.wait_idle()
    client = client_on(two, "1")
    assert completion(client) == "1"  # the room is free again
    client.close()


def test_ui_workers_send_chats_to_their_api_process(two):
    workers = ui_workers(two)
    assert len(workers) == 2
    sockets = [os.path.basename(s) for _, s in workers]
    assert sockets == ["api-1.sock", "server.sock"], sockets
    url, chat_socket = workers[0]  # the worker given API process 1
    transport = httpx.HTTPTransport(uds=chat_socket)
    with httpx.Client(transport=transport, base_url="http://api", timeout=30) as client:
        before = client.get("/internal/status").json()["generated_tokens"]
        events: list = []
        browser_chat(url, "CUDA warp?", 16, events)
        assert events[-1]["msg"] == "process_completed", events[-1]
        assert events[-1].get("success") is True, events[-1]
        after = wait_for(
            lambda: client.get("/internal/status").json()["generated_tokens"] > before,
            20,
            "API process 1 counts the chat's tokens",
        )
        assert after
        response = client.get("/internal/status")
        assert response.headers["x-api-process"] == "1"


def stream_on(app, position: str, max_tokens: int):
    """A streamed chat completion on a connection that API process `position` answered:
    (connection, response), the head read, the body not yet."""
    body = json.dumps(
        {
            "model": "tiny-random",
            "messages": [{"role": "user", "content": "Explain CUDA streams."}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
    )
    host, port = app.api_url.removeprefix("http://").split(":")
    for _ in range(200):  # a connection that `position` accepted (asked with a cheap GET)
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        conn.request("GET", "/v1/models")
        answer = conn.getresponse()
        answer.read()
        if answer.getheader("x-api-process") == position:
            break
        conn.close()
    else:
        pytest.fail(f"API process {position} accepted none of 200 new connections")
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    response = conn.getresponse()
    assert response.getheader("x-api-process") == position
    assert response.status == 200, response.read()[:500]
    return conn, response


def test_a_killed_api_process_is_replaced_while_the_other_streams_on(two):
    two.wait_idle()
    victim = api_process_pids(two)[1]
    conn, response = stream_on(two, "0", max_tokens=400)
    first = response.readline()  # the stream has begun
    assert first.startswith(b"data:"), first
    os.kill(victim, signal.SIGKILL)
    rest = response.read().decode()
    conn.close()
    assert rest.rstrip().endswith("data: [DONE]"), rest[-300:]
    assert '"error"' not in rest
    chunks = [json.loads(line[5:]) for line in rest.splitlines() if line.startswith("data: {")]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length", finish[-3:]
    # The replacement: a new process on a spare slot, serving the port and its chats.
    wait_for(
        lambda: "API process 1 ended (exit -9); replaced: ready" in two.log.read_text(),
        120,
        "the app replaces the killed API process",
    )
    assert api_process_pids(two)[1] != victim
    client_on(two, "1").close()
    url, chat_socket = ui_workers(two)[0]
    assert os.path.basename(chat_socket) == "api-1.sock"
    events: list = []
    browser_chat(url, "again", 8, events)
    assert events[-1]["msg"] == "process_completed" and events[-1].get("success"), events[-1]


def test_a_chat_whose_api_process_is_gone_goes_to_the_main_process(two):
    two.wait_idle()
    url, _ = ui_workers(two)[0]
    pid = api_process_pids(two)[1]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(pid), 10, "the API process is gone")
    events: list = []
    browser_chat(url, "still there?", 8, events)
    assert events[-1]["msg"] == "process_completed" and events[-1].get("success"), events[-1]
    wait_for(
        lambda: two.log.read_text().count("replaced: ready") >= 2,
        120,
        "the app replaces the second killed API process",
    )


def test_an_engine_restart_brings_new_api_processes(two):
    two.wait_idle()
    old = api_process_pids(two)[1]
    main_socket = ui_workers(two)[1][1]  # the worker whose chats go to the main process
    assert os.path.basename(main_socket) == "server.sock"
    transport = httpx.HTTPTransport(uds=main_socket)
    with httpx.Client(transport=transport, base_url="http://api", timeout=30) as client:
        assert client.post("/internal/restart").json()["restarting"] is True
    wait_for(lambda: two.log.read_text().count("2 API processes serve") >= 2, 240, "restarted")
    wait_for(lambda: two.stats()["phase"] == "ready", 60, "the new engine ready")
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    assert api_process_pids(two)[1] != old
    for position in ("0", "1"):
        client = client_on(two, position)
        assert completion(client) == position
        client.close()


def test_ctrl_c_ends_every_process_of_the_app(two):
    processes = psutil.Process(two.process.pid).children(recursive=True)
    api = api_process_pids(two)
    assert api, "no API process to end"
    began = time.monotonic()
    os.killpg(two.process.pid, signal.SIGINT)
    code = two.process.wait(timeout=60)
    took = time.monotonic() - began
    assert code == 0, two.log.read_text()[-2000:]
    assert took < 30, f"stopped in {took:.1f} s"
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert "EngineDeadError" not in two.log.read_text()
