"""The course HTTP API against the running app: readiness, /predict single and batch, bad input."""

import json
import time

import pytest

from tests.conftest import free_port, get_json, launch_app, post, stop_app, wait_ready

pytestmark = pytest.mark.slow


def test_ready_app_says_batch(app):
    assert get_json(app.api_url + "/") == {"status": "batch"}
    stats = app.stats()
    assert stats["phase"] == "ready" and stats["unfinished"] == 0


def test_single_prompt(app):
    status, body = post(app.api_url + "/predict", json.dumps({"prompt": "什么是CUDA?"}).encode())
    assert status == 200 and isinstance(body["response"], str) and body["response"]


def test_batch_keeps_order_and_count(app):
    prompts = [f"问题{i}: GPU?" for i in range(12)]
    status, body = post(app.api_url + "/predict", json.dumps({"prompt": prompts}).encode())
    assert status == 200 and len(body["response"]) == 12
    singles = [
        post(app.api_url + "/predict", json.dumps({"prompt": p}).encode())[1]["response"]
        for p in (prompts[0], prompts[-1])
    ]
    assert [body["response"][0], body["response"][-1]] == singles
    assert app.wait_idle()["unfinished"] == 0


@pytest.mark.parametrize(
    "body, code, message",
    [
        (b"not json", 422, "body must be JSON"),
        (b"[1, 2]", 422, '"prompt" field'),
        (b'{"question": "x"}', 422, '"prompt" field'),
        (b'{"prompt": 42}', 422, "string or a list of strings"),
        (b'{"prompt": []}', 422, "empty list"),
        (b'{"prompt": ["ok", 3]}', 422, "item 1 is int"),
        (b'{"prompt": "   "}', 422, "prompt is empty"),
        (json.dumps({"prompt": ["q"] * 1025}).encode(), 413, "exceeds the limit of 1024"),
    ],
)
def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(app, body, code, message):
    status, answer = post(app.api_url + "/predict", body)
    assert status == code and message in answer["error"]
    status, answer = post(app.api_url + "/predict", b'{"prompt": "still there?"}')
    assert status == 200


def test_oversized_prompt_is_422_naming_the_limit(app):
    status, answer = post(app.api_url + "/predict", json.dumps({"prompt": "GPU " * 3000}).encode())
    assert status == 422 and "max_model_len 1024" in answer["error"]


def test_readiness_moves_from_initializing_to_batch(tmp_path):
    fresh = launch_app(tmp_path, "--api-token", "s3cret")
    try:
        assert get_json(fresh.api_url + "/")["status"] in ("initializing", "batch")
        wait_ready(fresh)
        assert get_json(fresh.api_url + "/") == {"status": "batch"}
        assert post(fresh.api_url + "/predict", b'{"prompt": "x"}')[0] == 401
        assert (
            post(fresh.api_url + "/predict", b'{"prompt": "x"}', {"Authorization": "Bearer no"})[0]
            == 401
        )
        assert (
            post(
                fresh.api_url + "/predict", b'{"prompt": "x"}', {"Authorization": "Bearer s3cret"}
            )[0]
            == 200
        )
    finally:
        started = time.monotonic()
        assert stop_app(fresh) == 0
        assert time.monotonic() - started < 90


def test_an_engine_that_is_not_ready_gets_503_with_the_reason(tmp_path):
    """The API over an engine whose start failed (no such model: it fails before vLLM loads)."""
    from engine import EngineService, make_config
    from server import HttpServers, build_apps

    service = EngineService(
        make_config("cpu", model=str(tmp_path / "no-model")), auto_restart=False
    )
    public, _ = build_apps(service, "s3cret", 8)
    port = free_port()
    server = HttpServers(service)
    server.add(public, host="127.0.0.1", port=port)
    url = f"http://127.0.0.1:{port}"
    service.start()
    assert service.wait_ready(timeout=60).phase == "failed"
    server.start()
    try:
        wait_for_server(url)
        assert get_json(url + "/")["status"] == "failed"
        status, answer = post(
            url + "/predict", b'{"prompt": "x"}', {"Authorization": "Bearer s3cret"}, timeout=30
        )
        assert status == 503 and "not ready" in answer["error"]
        assert "no-model" in answer["error"]
    finally:
        server.stop()
        service.shutdown()


def wait_for_server(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get_json(url + "/", timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
