"""Shared fixtures: the question sets, one in-process engine service, and one running app
(UI + HTTP API) on free loopback ports, all with the tiny-random model, on the CPU (or on the
GPU where vLLM for CUDA is installed).

The official question set is used where it can be had (`QWEN_DEMO_EVAL_FILE`, the download
cache, `../shared/eval_data` beside the checkout, or the verified download); otherwise the
tests run on a stand-in of 358 questions built from the built-in sample set, and the checks of
figures that only the official set has (14,193 prompt tokens, 40,118 replay tokens, the 358
official ROUGE-L values) are skipped, each with its reason in pytest's summary. Starting vLLM
costs tens of seconds on the CPU, so each engine is started once per test session.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "eval_data"
USER_CACHE = Path.home() / ".cache" / "qwen3-vllm-demo" / "eval_data"
os.environ.setdefault("QWEN_DEMO_CACHE", str(ROOT / ".cache" / "test"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from engine.settings.config import BENCH_BATCH  # noqa: E402
from engine.settings.devices import runs_on_cpu  # noqa: E402
from eval_data import SAMPLE_FILE, load_course_file  # noqa: E402
from eval_data.download import ENV_FILE, FILE_NAME, OFFICIAL_SHA256, sha256_of  # noqa: E402
from launch.ui_process import free_port  # noqa: E402  (re-exported for the tests)

# The engine the tests start: vLLM's CPU backend, or the GPU where vLLM for CUDA runs. The
# settings the tests count on are the same on both: a 1024-token context (answers of known
# lengths) and a streamed output after every token (the GPU profiles send one every 16, which
# would give an 8-token reply in one piece and a 32-token stream in three).
TEST_PROFILE = "cpu" if runs_on_cpu() else "auto"
TEST_ENGINE = dict(max_model_len=1024, gpu_memory_utilization=0.3, stream_interval=1)


@dataclass(frozen=True)
class QuestionSet:
    """The 358-question file the tests and their app instances use, and where it came from."""

    path: Path
    official: bool  # False: a stand-in of the built-in sample's questions, repeated to 358
    origin: str


def _verified(path: Path) -> bool:
    return path.is_file() and sha256_of(path) == OFFICIAL_SHA256


@functools.cache
def find_official_set() -> tuple[Path | None, str]:
    """(the official question file, where from), or (None, why not)."""
    candidates = [
        (os.environ.get(ENV_FILE), f"${ENV_FILE}"),
        (USER_CACHE / FILE_NAME, "the download cache"),
        (SHARED_DATA / FILE_NAME, "../shared/eval_data"),
    ]
    for place, origin in candidates:
        if place and _verified(Path(place)):
            return Path(place), origin
    from eval_data import DataError, official_question_set

    previous = os.environ.pop(ENV_FILE, None)
    try:
        return official_question_set(timeout=10), "the verified download"
    except DataError as err:
        return None, f"not in ${ENV_FILE}, the cache or ../shared/eval_data, and {err}"
    finally:
        if previous is not None:
            os.environ[ENV_FILE] = previous


def stand_in_text(count: int = BENCH_BATCH) -> str:
    """A course-format file of `count` questions: the built-in sample's, repeated in order."""
    pairs = load_course_file(SAMPLE_FILE)
    blocks = []
    for n in range(1, count + 1):
        pair = pairs[(n - 1) % len(pairs)]
        blocks.append(f"（{n}. 问题：{pair.question}\n答案：{pair.reference}\n")
    return "\n".join(blocks)


def pytest_report_header(config) -> str:
    """Say which question set the run uses, first thing in pytest's output."""
    found, origin = find_official_set()
    if found is None:
        return (
            "question set: the built-in sample's questions repeated to 358; the official set "
            f"is unavailable ({origin}), so the checks of its figures are skipped"
        )
    return f"question set: the official 358 questions, from {origin}"


@pytest.fixture(scope="session")
def questions(tmp_path_factory) -> QuestionSet:
    """The question file the tests use, also set as `QWEN_DEMO_EVAL_FILE` so that the app
    instances they start serve it as their 358-question set."""
    found, origin = find_official_set()
    target = tmp_path_factory.mktemp("eval_data") / FILE_NAME
    if found is None:
        target.write_text(stand_in_text(), encoding="utf-8")
    else:
        shutil.copy(found, target)
    os.environ[ENV_FILE] = str(target)
    return QuestionSet(target, found is not None, origin)


@pytest.fixture(scope="session")
def question_file(questions) -> Path:
    """The tests' 358-question file: the official set where available, else the stand-in."""
    return questions.path


@pytest.fixture(scope="session")
def official_file(questions) -> Path:
    """The official question file; the test is skipped, with the reason, where it is missing."""
    if not questions.official:
        pytest.skip(f"official question set unavailable: {questions.origin}")
    return questions.path


@pytest.fixture(scope="session")
def seed_details() -> list[dict]:
    """The official per-question ROUGE-L figures (never committed; ../shared/eval_data)."""
    source = SHARED_DATA / "seed_eval_details.json"
    if not source.is_file():
        pytest.skip(f"official per-question ROUGE-L figures unavailable: no {source}")
    return json.loads(source.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from engine.models.sources import build_builtin

    return build_builtin("tiny-random")


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="session")
def service(tiny_model_dir, questions):
    """One real engine (tiny-random) for the in-process tests."""
    from engine import EngineService, make_config

    svc = EngineService(
        make_config(TEST_PROFILE, model="tiny-random", max_queued_requests=600, **TEST_ENGINE),
        auto_restart=False,
    )
    svc.start()
    status = svc.wait_ready(timeout=600)
    assert status.ready, status.message
    yield svc
    svc.shutdown()


def get_json(url: str, timeout: float = 10, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def post(url: str, body: bytes, headers: dict | None = None, timeout: float = 300):
    """POST raw bytes; return (status, parsed JSON or text)."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, json.loads(text)
        except ValueError:
            return err.code, text.decode(errors="replace")


@dataclass
class RunningApp:
    """A launched `python app.py` and where to reach it."""

    process: subprocess.Popen
    ui_url: str
    api_url: str
    log: Path
    token: str | None = None  # its --api-token (load figures need it where one is set)

    def stats(self) -> dict:
        return get_json(self.api_url + "/stats", token=self.token)

    def wait_idle(self, timeout: float = 60) -> dict:
        """Wait until the engine tracks no request; return the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["unfinished"] == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.2)


def launch_app(
    tmp_dir: Path, *extra: str, env: dict | None = None, model: str | None = "tiny-random"
) -> RunningApp:
    """Start the app on free ports and return as soon as its servers answer (not yet ready).

    `model` None starts it as a newcomer does, with no --model (offline: tiny-random)."""
    ui_port, api_port = free_port(), free_port()
    log = tmp_dir / f"app-{ui_port}.log"
    cmd = [
        sys.executable,
        "-u",
        str(ROOT / "app.py"),
        "--profile",
        TEST_PROFILE,
        *(["--model", model] if model else []),
        "--port",
        str(ui_port),
        "--api-port",
        str(api_port),
        "--max-model-len",
        str(TEST_ENGINE["max_model_len"]),
        "--gpu-memory-utilization",
        str(TEST_ENGINE["gpu_memory_utilization"]),
        "--stream-interval",
        str(TEST_ENGINE["stream_interval"]),
        *extra,
    ]
    environment = {**os.environ, **(env or {})}
    environment = {k: v for k, v in environment.items() if v is not None}  # None: unset
    process = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env=environment,
        start_new_session=True,
    )
    token = extra[extra.index("--api-token") + 1] if "--api-token" in extra else None
    urls = f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{api_port}"
    app = RunningApp(process, *urls, log, token)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app exited early:\n{log.read_text()[-3000:]}")
        try:
            get_json(app.api_url + "/", timeout=2)
            urllib.request.urlopen(app.ui_url, timeout=2)
            return app
        except OSError:
            time.sleep(0.5)
    stop_app(app)
    pytest.fail(f"app did not answer within 120 s:\n{log.read_text()[-3000:]}")


UI_WARM = "UI worker(s) warm in"  # the app's line once each UI worker has had its warm-up chat


def wait_ready(app: RunningApp, timeout: float = 600) -> None:
    """Until the engine is ready and the UI workers' warm-up chats are over (they would count
    against a test's admission limit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = get_json(app.api_url + "/").get("status") == "batch"
        if ready and UI_WARM in app.log.read_text(errors="replace"):
            return
        if app.process.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"engine not ready in {timeout} s:\n{app.log.read_text()[-3000:]}")


def stop_app(app: RunningApp, timeout: float = 90) -> int:
    """SIGTERM the app and wait; kill its process group if it hangs."""
    if app.process.poll() is None:
        app.process.send_signal(signal.SIGTERM)
        try:
            app.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(app.process.pid, signal.SIGKILL)
            app.process.wait()
    return app.process.returncode


@pytest.fixture(scope="session")
def app(tmp_path_factory, questions, tiny_model_dir) -> RunningApp:
    """The app as a user runs it, engine warm; shared by HTTP, client, browser and load tests.
    Its UI runs as on a larger machine: two Gradio workers behind the front."""
    running = launch_app(tmp_path_factory.mktemp("app"), "--ui-workers", "2")
    wait_ready(running)
    yield running
    stop_app(running)


# ---- helpers shared by the end-to-end test modules -----------------------------------------
# (Imported here rather than at the top, to keep this section in one piece.)
import re  # noqa: E402

from engine.models.cache import default_cache_root  # noqa: E402
from engine.models.qwen3_files import ENV_DIR, tokenizer_dir  # noqa: E402
from engine.qwen3.prompt import DEFAULT_SYSTEM_PROMPT  # noqa: E402

# The tests keep built models and data in a cache folder of their own (QWEN_DEMO_CACHE above);
# Qwen3's tokenizer files are the ones ./setup.sh fetched into the user's cache (an offline
# machine cannot fetch them again).
os.environ.setdefault(ENV_DIR, str(tokenizer_dir(default_cache_root())))

STATS_TITLE = re.compile(r"\d+ tokens · TTFT ")  # the figures line under a finished reply


def chat_args(message: str, max_new_tokens: int = 8, temperature: float = 0.6) -> tuple:
    """/chat inputs: message, system prompt, thinking, temperature, top_p, top_k, max tokens."""
    return (message, DEFAULT_SYSTEM_PROMPT, True, temperature, 0.95, 20, max_new_tokens)


@functools.lru_cache
def chat_fn_index(ui_url: str) -> int:
    """The chat event's id in the page's config (a browser has it from loading the page)."""
    import httpx

    config = httpx.get(ui_url + "/config", timeout=30).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == "chat")


def browser_chat(
    ui_url: str, message: str, max_tokens: int, events: list, ready=None, stop=None
) -> None:
    """One browser tab's chat over Gradio's queue protocol (`queue/join`, then the server-sent
    events of `queue/data`), as a page sends it; appends every event's message. `ready` (a
    threading.Event) is set at the first streamed chunk; `stop` (one too) closes the stream,
    as a closed tab does."""
    import httpx

    fn = chat_fn_index(ui_url)
    session = f"tab{time.monotonic_ns()}"
    data = [message, [], DEFAULT_SYSTEM_PROMPT, True, 0.6, 0.95, 20, max_tokens]
    body = {"data": data, "fn_index": fn, "session_hash": session}
    with httpx.Client(base_url=ui_url + "/gradio_api", timeout=60) as client:
        client.post("/queue/join", json=body).raise_for_status()
        with client.stream("GET", "/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                events.append(json.loads(line[5:]))
                if events[-1]["msg"] == "process_generating" and ready is not None:
                    ready.set()
                if events[-1]["msg"] in ("process_completed", "close_stream"):
                    return
                if stop is not None and stop.is_set():
                    return


def long_completion(model: str, content: str, stream: bool = True) -> dict:
    """A /v1/chat/completions body that keeps an engine slot busy for many seconds on the CPU
    (900 tokens, end of sequence ignored)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 900,
        "ignore_eos": True,
        "stream": stream,
    }


def assistant_text(output) -> str:
    """The assistant text of a /chat output (a list of messages), the figures box left out."""
    if not isinstance(output, (list, tuple)):
        return ""
    parts = []
    for message in output:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        title = (message.get("metadata") or {}).get("title") or ""
        if STATS_TITLE.match(title):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts).strip()


def prompt_with_budget(tokenizer, budget: int, max_model_len: int = 1024) -> str:
    """A question whose chat prompt leaves exactly `budget` new tokens under max_model_len.

    The engine caps each answer at max_model_len minus the prompt, so answers to these prompts
    have distinct, known lengths: that makes their order checkable even though the random
    model's text hardly depends on the question.
    """
    from engine.qwen3.prompt import chat_prompt_ids

    target = max_model_len - budget

    def length(n: int) -> int:
        return len(chat_prompt_ids(tokenizer, "Count: " + " go" * n))

    n = target - length(0)
    for _ in range(8):
        got = length(n)
        if got == target:
            return "Count: " + " go" * n
        n += target - got
    raise AssertionError(f"could not build a prompt of {target} tokens")


def offline_env(cache: Path) -> dict:
    """The environment of a machine without network (HTTPS through a proxy that refuses), with
    an empty cache folder and no local copy of the official question set."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "QWEN_DEMO_EVAL_FILE"}
    env.update(QWEN_DEMO_CACHE=str(cache), https_proxy=closed, HTTPS_PROXY=closed)
    env.update(no_proxy="", NO_PROXY="")
    return env


def worker_cookies(ui_url: str, workers: int) -> list[str]:
    """A `Cookie` header for each UI worker behind the front, as new visitors are given them
    (the front hands new visitors to the workers in turn)."""
    from launch.ui_front import COOKIE

    found: list[str] = []
    for _ in range(4 * workers):
        with urllib.request.urlopen(ui_url + "/", timeout=30) as response:
            cookie = response.headers.get("Set-Cookie", "").split(";", 1)[0]
        if cookie.startswith(COOKIE + "=") and cookie not in found:
            found.append(cookie)
        if len(found) == workers:
            return found
    pytest.fail(f"the front gave {len(found)} distinct worker cookies, not {workers}")


def recv_until(conn, marker: bytes) -> bytes:
    """What a socket sends until `marker` has arrived or the peer closes."""
    data = b""
    while marker not in data:
        piece = conn.recv(65536)
        if not piece:
            break
        data += piece
    return data


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def private_app(tmp_path_factory, name: str, *flags: str, env=None, timeout: float = 400):
    """A launched app of a test module's own (small warm-up, short /predict answers), ready;
    stopped when the generator is closed. Later flags override the defaults."""
    app = launch_app(
        tmp_path_factory.mktemp(name),
        "--warmup-batch",
        "8",
        "--predict-max-tokens",
        "8",
        *flags,
        env=env,
    )
    try:
        wait_ready(app, timeout=timeout)
        yield app
    finally:
        stop_app(app)
