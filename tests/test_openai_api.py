"""vLLM's OpenAI-compatible API and Prometheus metrics on the app's HTTP port, driven by the
real `openai` client and by vLLM's own load generator.

On the session's app (tiny-random, no token): the model list, a streamed chat (a chunk per
token, usage), a completion, Qwen3's reasoning split and thinking off, 4xx on bad input,
`/tokenize`, `/metrics` counting the tokens generated, `vllm bench serve`. On a private app
(a token, a queue limit of 4): the token on every route that can generate or reveal anything,
503 under the admission limit, and the engine restarted (Restart button, then a killed engine
process) while a stream is open: the stream ends with an error, the next request works.

Random weights: the reasoning checks restrict sampling to a few tokens and `</think>` (with a
seed), and compare the chat's split with the raw completion of the same prompt.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import psutil
import pytest

from tests.conftest import ROOT, get_json, post, private_app, wait_ready

pytestmark = [
    pytest.mark.slow,
    # The openai client's stream generator, left behind by a stream that broke off, trips
    # over a half-imported httpx when it is collected: noise from the client, not the server.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MODEL = "tiny-random"
TOKEN = "open-sesame"
QUEUE_LIMIT = 4
THINK_CLOSE = "</think>"
PUBLIC = {"/health", "/ping", "/version", "/docs", "/docs/oauth2-redirect", "/redoc"}
COURSE = {"/", "/stats", "/predict"}
# vLLM routes that its /openapi.json leaves out.
NOT_IN_SCHEMA = [
    ("GET", "/metrics"),
    ("POST", "/inference/v1/generate"),
    ("POST", "/inference/v1/abort_requests"),
]
# Among them the routes that vLLM's own --api-key leaves open.
MUST_GUARD = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/responses",
    "/v1/messages",
    "/invocations",
    "/inference/v1/generate",
    "/tokenize",
    "/metrics",
}


def client(app, token: str | None = None, timeout: float = 120):
    return openai.OpenAI(
        base_url=app.api_url + "/v1", api_key=token or "none", max_retries=0, timeout=timeout
    )


def request(url: str, method: str = "GET", body: bytes | None = None, token: str | None = None):
    """(status, text) of one HTTP request, errors included."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def http_answer(conn: socket.socket) -> tuple[int, dict, str]:
    """(status, headers, body) of one HTTP/1.1 answer read to the connection's close."""
    data = b""
    while piece := conn.recv(65536):
        data += piece
    head, _, text = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, text.decode()


def generated_tokens(app, token: str | None = None) -> float:
    """vLLM's Prometheus counter of generated tokens, for this model."""
    status, text = request(app.api_url + "/metrics", token=token)
    assert status == 200, text
    found = re.search(
        rf'^vllm:generation_tokens_total\{{[^}}]*model_name="{MODEL}"[^}}]*\}} (\S+)$', text, re.M
    )
    assert found, "no vllm:generation_tokens_total for the served model name"
    return float(found.group(1))


def long_stream(chat, tokens: int = 1000):
    """A streamed chat that keeps the engine busy; returns (stream, its chunk iterator)."""
    stream = chat.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me everything about GPUs."}],
        max_tokens=tokens,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    next(chunks)  # the request is in the engine once its first chunk is back
    return stream, chunks


def extra(obj, name: str):
    """A field the `openai` models keep as an extra (vLLM's `reasoning`, `reasoning_content`)."""
    return getattr(obj, name, None)


def read_until_error(chunks) -> tuple[int, Exception | None]:
    count = 0
    try:
        for _ in chunks:
            count += 1
    except openai.APIError as err:
        return count, err
    return count, None


# ---- reasoning_content beside vLLM's reasoning (no engine) --------------------------------
def _relay(messages: list[dict]) -> list[dict]:
    from server.openai import with_reasoning_content

    sent = []

    async def send(message):
        sent.append(message)

    async def play():
        relay = with_reasoning_content(send)
        for message in messages:
            await relay(message)

    asyncio.run(play())
    return sent


def _start(kind: bytes, length: int | None = None) -> dict:
    headers = [(b"content-type", kind)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": 200, "headers": headers}


def _body(data: bytes, more: bool) -> dict:
    return {"type": "http.response.body", "body": data, "more_body": more}


def test_a_whole_reply_gets_reasoning_content_and_a_new_length():
    body = json.dumps({"choices": [{"message": {"content": "a", "reasoning": "思考"}}]}).encode()
    sent = _relay(
        [_start(b"application/json", len(body)), _body(body[:9], True), _body(body[9:], False)]
    )
    reply = json.loads(sent[1]["body"])
    assert reply["choices"][0]["message"]["reasoning_content"] == "思考"
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()
    errors = b'{"error": {"message": "no", "code": 400}}'
    assert _relay([_start(b"application/json"), _body(errors, False)])[1]["body"] == errors


def test_streamed_events_split_anywhere_get_reasoning_content():
    events = (
        b"".join(
            b"data: " + json.dumps({"choices": [{"delta": delta}]}).encode() + b"\n\n"
            for delta in ({"role": "assistant"}, {"reasoning": "r1"}, {"content": "c1"})
        )
        + b"data: [DONE]\n\n"
    )
    pieces = [events[i : i + 7] for i in range(0, len(events), 7)]
    messages = [_body(p, i < len(pieces) - 1) for i, p in enumerate(pieces)]
    sent = _relay([_start(b"text/event-stream"), *messages])
    text = b"".join(m["body"] for m in sent[1:]).decode()
    blocks = [b for b in text.split("\n\n") if b]
    assert blocks[-1] == "data: [DONE]"
    deltas = [json.loads(b[6:])["choices"][0]["delta"] for b in blocks[:-1]]
    assert deltas == [
        {"role": "assistant"},
        {"reasoning": "r1", "reasoning_content": "r1"},
        {"content": "c1"},
    ]


# ---- the session's app: what a client sees -----------------------------------------------
def test_models_lists_the_served_name_beside_the_course_api(app):
    assert [m.id for m in client(app).models.list()] == [MODEL]
    assert get_json(app.api_url + "/") == {"status": "batch"}
    assert request(app.api_url + "/health")[0] == 200


def test_streamed_chat_arrives_token_by_token_with_usage(app):
    started = time.perf_counter()
    arrivals, pieces, usage, seen_in_engine = [], [], None, 0
    stream = client(app).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is a CUDA warp?"}],
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text = (choice.delta.content or "") + (extra(choice.delta, "reasoning_content") or "")
            if text:
                pieces.append(text)
                arrivals.append(time.perf_counter() - started)
                if len(pieces) == 2:  # the same engine as /predict and the UI
                    seen_in_engine = app.stats()["unfinished"]
    assert usage is not None and usage.completion_tokens == 32 and usage.prompt_tokens > 0
    # One chunk a token (the test app streams after every token, on a GPU too: conftest pins
    # --stream-interval 1); a few tokens end inside a character and add no text of their own.
    assert len(pieces) >= 24, f"{len(pieces)} chunks for 32 tokens: bunched, not per token"
    assert arrivals[-1] - arrivals[0] > 0.05, arrivals
    assert seen_in_engine >= 1
    assert app.wait_idle()["unfinished"] == 0


def test_completion_is_greedy_and_repeatable(app):
    def complete() -> openai.types.Completion:
        return client(app).completions.create(
            model=MODEL,
            prompt="CUDA shared memory is",
            max_tokens=8,
            temperature=0,
            extra_body={"ignore_eos": True},
        )

    first, second = complete(), complete()
    assert first.model == MODEL and first.usage.completion_tokens == 8
    assert first.choices[0].text and first.choices[0].text == second.choices[0].text


def _reasoning_case(app, tokenizer, thinking: bool):
    """A chat whose sampling is held to three words and `</think>` (seeded), and the raw
    completion of the very prompt the chat renders, for a seed whose raw text has words both
    before and after the first `</think>`."""
    words = [tokenizer.encode(w, add_special_tokens=False)[0] for w in (" GPU", " warp", " mem")]
    allowed = [*words, tokenizer.convert_tokens_to_ids(THINK_CLOSE)]
    chat = client(app)
    for seed in range(12):
        messages = [{"role": "user", "content": f"What is a warp? ({seed})"}]
        prompt = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
        )
        common = dict(model=MODEL, max_tokens=12, temperature=1.0, seed=seed)
        options = {"allowed_token_ids": allowed, "ignore_eos": True}
        raw = chat.completions.create(prompt=prompt, extra_body=options, **common).choices[0].text
        before, found, _ = raw.partition(THINK_CLOSE)
        if found and before.strip():
            options["chat_template_kwargs"] = {"enable_thinking": thinking}
            return chat, messages, common, options, raw
    pytest.fail("no seed gave words before and after </think>")


def test_reasoning_is_split_off_as_reasoning_content(app, tokenizer):
    chat, messages, common, options, raw = _reasoning_case(app, tokenizer, thinking=True)
    reasoning, _, rest = raw.partition(THINK_CLOSE)
    # Later `</think>` tokens belong to the answer; vLLM keeps them when streaming only.
    answer = rest.replace(THINK_CLOSE, "")

    message = chat.chat.completions.create(messages=messages, extra_body=options, **common)
    message = message.choices[0].message
    assert extra(message, "reasoning_content") == reasoning
    assert extra(message, "reasoning") == reasoning  # vLLM's own name for it
    assert message.content.replace(THINK_CLOSE, "") == answer

    streamed = {"reasoning_content": "", "content": ""}
    for chunk in chat.chat.completions.create(
        messages=messages, extra_body=options, stream=True, **common
    ):
        for choice in chunk.choices:
            streamed["reasoning_content"] += extra(choice.delta, "reasoning_content") or ""
            streamed["content"] += choice.delta.content or ""
    assert streamed["reasoning_content"] == reasoning
    assert streamed["content"].replace(THINK_CLOSE, "") == answer


def test_thinking_off_per_request_gives_no_reasoning(app, tokenizer):
    chat, messages, common, options, raw = _reasoning_case(app, tokenizer, thinking=False)
    kwargs = options["chat_template_kwargs"]
    status, body = request(
        app.api_url + "/tokenize",
        "POST",
        json.dumps({"model": MODEL, "messages": messages, "chat_template_kwargs": kwargs}).encode(),
    )
    assert status == 200, body
    rendered = tokenizer.decode(json.loads(body)["tokens"])
    assert rendered.endswith("<think>\n\n</think>\n\n"), rendered[-60:]

    message = chat.chat.completions.create(messages=messages, extra_body=options, **common)
    message = message.choices[0].message
    assert extra(message, "reasoning_content") is None and extra(message, "reasoning") is None
    assert message.content == raw  # all of it is the answer, </think> included


def test_tokenize_matches_the_tokenizer(app, tokenizer):
    status, body = request(
        app.api_url + "/tokenize", "POST", json.dumps({"model": MODEL, "prompt": "GPU"}).encode()
    )
    assert status == 200 and json.loads(body)["tokens"] == tokenizer.encode("GPU")


@pytest.mark.parametrize(
    "path, payload",
    [
        ("/chat/completions", {"model": "no-such-model", "messages": [{"role": "user"}]}),
        ("/chat/completions", {"model": MODEL, "messages": "hi"}),
        ("/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "a"}],
                               "max_tokens": -1}),
        ("/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "a"}],
                               "temperature": -1}),
        ("/completions", {"model": MODEL, "prompt": "GPU " * 3000, "max_tokens": 4}),
        ("/completions", {"model": MODEL}),
    ],
)  # fmt: skip
def test_bad_input_gets_a_4xx_in_vllms_shape_and_the_server_keeps_serving(app, path, payload):
    status, body = request(app.api_url + "/v1" + path, "POST", json.dumps(payload).encode())
    assert 400 <= status < 500, (status, body)
    error = json.loads(body)["error"]
    assert error["message"] and error["code"] == status
    reply = client(app).completions.create(model=MODEL, prompt="still there?", max_tokens=2)
    assert reply.choices[0].text


def test_a_body_that_is_not_json_gets_a_4xx(app):
    status, body = request(app.api_url + "/v1/chat/completions", "POST", b"not json")
    assert 400 <= status < 500, (status, body)


def test_metrics_count_the_tokens_generated(app):
    before = generated_tokens(app)
    client(app).completions.create(
        model=MODEL, prompt="GPU", max_tokens=7, extra_body={"ignore_eos": True}
    )
    deadline = time.monotonic() + 10
    while generated_tokens(app) < before + 7 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert generated_tokens(app) == before + 7


@pytest.mark.timeout(600)
def test_vllm_bench_serve_completes_every_request(app):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perf.serve",
            "--base-url",
            app.api_url,
            "--backend",
            "openai-chat",
            "--endpoint",
            "/v1/chat/completions",
            "--dataset-name",
            "random",
            "--random-input-len",
            "32",
            "--random-output-len",
            "16",
            "--num-prompts",
            "8",
            "--max-concurrency",
            "4",
            "--disable-tqdm",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"completed": 8, "failed": 0}, done.stdout[-3000:]
    assert app.wait_idle()["unfinished"] == 0


# ---- a private app: token, admission limit, restarts -------------------------------------
class TestGuardedApp:
    @pytest.fixture(scope="class")
    def guarded(self, tmp_path_factory, questions, tiny_model_dir):
        yield from private_app(
            tmp_path_factory,
            "openai-guarded",
            "--api-token",
            TOKEN,
            "--max-queued-requests",
            str(QUEUE_LIMIT),
            "--warmup-batch",
            "2",
        )

    def test_the_token_guards_every_route_that_can_generate_or_reveal(self, guarded):
        schema = json.loads(request(guarded.api_url + "/openapi.json")[1])
        assert COURSE <= set(schema["paths"])  # /docs lists the course's routes too
        routes = [
            (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
            for path, methods in schema["paths"].items()
            for method in methods
            if path not in PUBLIC | COURSE
        ]
        routes += NOT_IN_SCHEMA
        listed = {path for _, path in routes}
        assert MUST_GUARD <= listed, MUST_GUARD - listed
        for method, path in routes:
            body = b"{}" if method == "POST" else None
            expected = 404 if "elastic_ep" in path else 401  # turned off altogether
            for token in (None, "wrong"):
                status, text = request(guarded.api_url + path, method, body, token)
                assert status == expected, (method, path, status, text[:200])
        for path in ("/health", "/ping", "/version", "/"):
            assert request(guarded.api_url + path)[0] == 200, path
        for path in ("/stats", "/metrics"):  # load figures: the token's, where one is set
            assert request(guarded.api_url + path)[0] == 401, path
            assert request(guarded.api_url + path, token=TOKEN)[0] == 200, path
        assert request(guarded.api_url + "/scale_elastic_ep", "POST", b"{}", TOKEN)[0] == 404

        with pytest.raises(openai.AuthenticationError):
            client(guarded, "wrong").chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        reply = client(guarded, TOKEN).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.usage.completion_tokens == 2
        assert generated_tokens(guarded, TOKEN) >= 2
        assert post(guarded.api_url + "/predict", b'{"prompt": "x"}')[0] == 401

    @pytest.mark.timeout(300)
    def test_the_admission_limit_answers_503_then_lets_requests_in_again(self, guarded):
        chat = client(guarded, TOKEN)
        streams = [long_stream(chat) for _ in range(QUEUE_LIMIT)]
        try:
            assert guarded.stats()["unfinished"] == QUEUE_LIMIT
            with pytest.raises(openai.InternalServerError) as caught:
                chat.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "one more"}], max_tokens=2
                )
            assert caught.value.status_code == 503
            assert caught.value.response.headers.get("retry-after") == "5"
            error = caught.value.response.json()["error"]
            assert error["reason"] == "busy" and error["code"] == 503, error
            with pytest.raises(openai.InternalServerError):
                chat.completions.create(model=MODEL, prompt="one more", max_tokens=2)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert post(guarded.api_url + "/predict", b'{"prompt": "x"}', auth)[0] == 503
            assert [m.id for m in chat.models.list()] == [MODEL]  # generates nothing: served
        finally:
            for stream, _ in streams:
                stream.close()
        assert guarded.wait_idle()["unfinished"] == 0
        reply = chat.completions.create(model=MODEL, prompt="room again?", max_tokens=2)
        assert reply.usage.completion_tokens == 2

    @pytest.mark.timeout(300)
    def test_requests_racing_for_the_last_slots_are_refused_with_busy_and_retry_after(
        self, guarded
    ):
        """QUEUE_LIMIT + 2 chat completions let in together: each request's head reaches the
        guard before any body, so all of them are past the guard before vLLM has seen one.
        Exactly QUEUE_LIMIT are answered; the others get 503 `busy` with Retry-After at once,
        from the guard, rather than vLLM's own queue-limit 503 later."""
        assert guarded.wait_idle()["unfinished"] == 0
        body = json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        ).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        host, port = guarded.api_url.removeprefix("http://").split(":")
        conns = [socket.create_connection((host, int(port)), timeout=60) for _ in range(6)]
        try:
            for conn in conns:
                conn.sendall(head)
            time.sleep(1.0)  # every head has reached the guard; no body has been sent
            answered, _, _ = select.select(conns, [], [], 0)  # refused without their bodies
            for conn in conns:
                if conn not in answered:
                    conn.sendall(body)
            answers = [http_answer(conn) for conn in conns]
        finally:
            for conn in conns:
                conn.close()
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200] * QUEUE_LIMIT + [503] * (len(conns) - QUEUE_LIMIT), answers
        for status, headers, text in answers:
            if status == 503:
                error = json.loads(text)["error"]
                assert error["reason"] == "busy" and error["code"] == 503, error
                assert headers.get("retry-after") == "5", headers
        assert guarded.wait_idle()["unfinished"] == 0

    def _restart_while_streaming(self, guarded, restart, expected: str) -> None:
        chat = client(guarded, TOKEN)
        pid, restarts = guarded.process.pid, guarded.stats()["restarts"]
        stream, chunks = long_stream(chat)
        restart()
        count, error = read_until_error(chunks)
        stream.close()
        assert error is not None, f"the stream ended quietly after {count} more chunks"
        assert expected in str(error), error

        # Until the new engine is up: 503 from every generating route, and from /health.
        with pytest.raises(openai.InternalServerError) as caught:
            chat.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert caught.value.status_code == 503
        assert request(guarded.api_url + "/health")[0] == 503

        deadline = time.monotonic() + 120  # the watchdog notices a dead engine in a second
        while guarded.stats()["restarts"] == restarts and time.monotonic() < deadline:
            time.sleep(0.2)
        wait_ready(guarded, timeout=400)
        assert guarded.process.pid == pid and guarded.process.poll() is None
        assert guarded.stats()["restarts"] == restarts + 1
        pieces = [
            extra(c.choices[0].delta, "reasoning_content") or c.choices[0].delta.content or ""
            for c in chat.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "back?"}],
                max_tokens=4,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            if c.choices
        ]
        assert len([p for p in pieces if p]) >= 3, pieces
        assert [m.id for m in chat.models.list()] == [MODEL]
        assert generated_tokens(guarded, TOKEN) >= 4  # the new engine's metrics
        assert guarded.wait_idle()["unfinished"] == 0

    @pytest.mark.timeout(600)
    def test_restart_button_while_streaming(self, guarded):
        from gradio_client import Client

        ui = Client(guarded.ui_url, verbose=False)
        try:
            self._restart_while_streaming(
                guarded, lambda: ui.predict(api_name="/restart_engine"), "engine restarting"
            )
        finally:
            ui.close()

    @pytest.mark.timeout(600)
    def test_killed_engine_process_while_streaming(self, guarded):
        def kill_engine_core() -> None:
            app = psutil.Process(guarded.process.pid)
            cores = [p for p in app.children(recursive=True) if "EngineCore" in p.name()]
            assert len(cores) == 1, cores
            cores[0].send_signal(signal.SIGKILL)

        self._restart_while_streaming(guarded, kill_engine_core, "EngineCore")
