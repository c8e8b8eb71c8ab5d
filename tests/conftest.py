"""Shared fixtures: the official data (copied from ../shared), one in-process engine service,
and one running app (UI + HTTP API) on free loopback ports, all on the CPU with tiny-random.

Starting vLLM costs tens of seconds on the CPU, so each is started once per test session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "eval_data"
os.environ.setdefault("QWEN_DEMO_CACHE", str(ROOT / ".cache" / "test"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The official question set and seed figures, copied (never committed)."""
    target = tmp_path_factory.mktemp("eval_data")
    for name in ("official_test_358.txt", "seed_eval_details.json"):
        source = SHARED_DATA / name
        if not source.is_file():
            pytest.fail(f"{source} is missing: tests need ../shared/eval_data beside the checkout")
        shutil.copy(source, target / name)
    os.environ["QWEN_DEMO_EVAL_FILE"] = str(target / "official_test_358.txt")
    return target


@pytest.fixture(scope="session")
def question_file(data_dir) -> Path:
    return data_dir / "official_test_358.txt"


@pytest.fixture(scope="session")
def seed_details(data_dir) -> list[dict]:
    return json.loads((data_dir / "seed_eval_details.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from engine.models import build_builtin

    return build_builtin("tiny-random")


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="session")
def service(tiny_model_dir, data_dir):
    """One real engine (vLLM CPU backend, tiny-random) for the in-process tests."""
    from engine import EngineService, make_config

    svc = EngineService(
        make_config("cpu", model="tiny-random", max_model_len=1024, max_queued_requests=600),
        auto_restart=False,
    )
    svc.start()
    status = svc.wait_ready(timeout=600)
    assert status.ready, status.message
    yield svc
    svc.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
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

    def stats(self) -> dict:
        return get_json(self.api_url + "/stats")

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
        "cpu",
        *(["--model", model] if model else []),
        "--port",
        str(ui_port),
        "--api-port",
        str(api_port),
        "--max-model-len",
        "1024",
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
    app = RunningApp(process, f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{api_port}", log)
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


def wait_ready(app: RunningApp, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get_json(app.api_url + "/").get("status") == "batch":
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
def app(tmp_path_factory, data_dir, tiny_model_dir) -> RunningApp:
    """The app as a user runs it, engine warm; shared by HTTP, client, browser and load tests."""
    running = launch_app(tmp_path_factory.mktemp("app"))
    wait_ready(running)
    yield running
    stop_app(running)


# ---- helpers shared by the end-to-end test modules -----------------------------------------
# (Imported here rather than at the top, to keep this section in one piece.)
import re  # noqa: E402

from engine.cache import default_cache_root  # noqa: E402
from engine.chat import DEFAULT_SYSTEM_PROMPT  # noqa: E402
from engine.qwen3_files import ENV_DIR, tokenizer_dir  # noqa: E402

# The tests keep built models and data in a cache folder of their own (QWEN_DEMO_CACHE above);
# Qwen3's tokenizer files are the ones ./setup.sh fetched into the user's cache (an offline
# machine cannot fetch them again).
os.environ.setdefault(ENV_DIR, str(tokenizer_dir(default_cache_root())))

STATS_TITLE = re.compile(r"\d+ tokens · TTFT ")  # the figures line under a finished reply


def chat_args(message: str, max_new_tokens: int = 8, temperature: float = 0.6) -> tuple:
    """/chat inputs: message, system prompt, thinking, temperature, top_p, top_k, max tokens."""
    return (message, DEFAULT_SYSTEM_PROMPT, True, temperature, 0.95, 20, max_new_tokens)


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


def offline_env(cache: Path) -> dict:
    """The environment of a machine without network (HTTPS through a proxy that refuses), with
    an empty cache folder and no local copy of the official question set."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "QWEN_DEMO_EVAL_FILE"}
    env.update(QWEN_DEMO_CACHE=str(cache), https_proxy=closed, HTTPS_PROXY=closed)
    env.update(no_proxy="", NO_PROXY="")
    return env
