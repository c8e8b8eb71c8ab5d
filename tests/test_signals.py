"""Stopping the app the ways users and process managers do, on the CPU build.

Each case starts an app of its own (tiny-random, a small warm-up) and stops it as a terminal
does (Ctrl-C: SIGINT to the whole foreground process group), as `kill -- -PGID` and systemd's
default do (SIGTERM to the group), as a process manager signalling the pid does, twice (a
second Ctrl-C while a stop is slow), or with `kill -9`. Every case checks the exit status and
time, that no process of the app is left, and that its log shows no engine restart, no
traceback and no EngineDeadError; streams open at the stop end with "the server is shutting
down", and a running benchmark is not reported as a finished run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.conftest import browser_chat, launch_app, long_completion, stop_app, wait_for, wait_ready

pytestmark = pytest.mark.slow

EXIT_WITHIN_S = 15
MODEL = "tiny-random"


@pytest.fixture(autouse=True)
def _question_set_and_model(questions, tiny_model_dir):
    """The apps below serve the tests' question set (the official one may not download)."""


def descendants(app) -> list[psutil.Process]:
    return psutil.Process(app.process.pid).children(recursive=True)


def started(tmp_path, *flags: str):
    app = launch_app(tmp_path, "--warmup-batch", "8", *flags, env={"QWEN_DEMO_API_TOKEN": ""})
    wait_ready(app, timeout=400)
    return app


def clean_log(app) -> str:
    """The app's log, checked for what a clean stop never prints."""
    log = app.log.read_text(errors="replace")
    for bad in ("Traceback", "EngineDeadError", "restarting", "[reaper]"):
        assert bad not in log, f"{bad!r} in the log:\n{log[-4000:]}"
    assert log.count("[engine] ready:") == 1, "the engine was started again during the stop"
    return log


def stopped(app, processes, within: float = EXIT_WITHIN_S) -> tuple[int, float]:
    """(exit status, seconds) of an app that was just signalled; no process of it may stay."""
    began = time.monotonic()
    try:
        code = app.process.wait(timeout=within)
    except Exception:
        stop_app(app)
        pytest.fail(f"the app did not exit within {within} s:\n{app.log.read_text()[-4000:]}")
    took = time.monotonic() - began
    _, alive = psutil.wait_procs(processes, timeout=5)
    assert not alive, f"processes left after the stop: {described(alive)}"
    return code, took


def described(processes) -> list[str]:
    """'pid: command line' of each process (what a failed check shows)."""
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid}: {' '.join(process.cmdline())[:160]}")
        except psutil.Error:
            lines.append(f"{process.pid}: gone")
    return lines


def ui_chat(app, message: str, max_tokens: int, events: list, ready: threading.Event) -> None:
    browser_chat(app.ui_url, message, max_tokens, events, ready)


def api_stream(app, events: list, ready: threading.Event) -> None:
    """One streamed chat completion; appends every event (or the transport's error)."""
    body = long_completion(MODEL, "Tell me everything about GPUs.")
    try:
        url = app.api_url + "/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]))
                    ready.set()
    except httpx.HTTPError as err:
        events.append({"transport": repr(err)})


def start(target, *args) -> tuple[threading.Thread, list, threading.Event]:
    events, ready = [], threading.Event()
    thread = threading.Thread(target=target, args=(*args, events, ready), daemon=True)
    thread.start()
    assert ready.wait(60), f"{target.__name__} streamed nothing"
    return thread, events, ready


GROUPS_SCRIPT = """
import json, multiprocessing, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from launch.processes import isolate_engine_processes


def group(queue):
    import threading

    niced = []
    thread = threading.Thread(target=lambda: niced.append(os.nice(0)))
    thread.start()
    thread.join()
    queue.put([os.getpgid(0), os.nice(0), niced[0]])


if __name__ == "__main__":
    isolate_engine_processes(nice=3)
    seen = {"app": [os.getpgid(0), os.nice(0), os.nice(0)]}
    for method in ("fork", "spawn"):
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        child = context.Process(target=group, args=(queue,))
        child.start()
        seen[method] = queue.get(timeout=120)
        child.join()
    line = [sys.executable, "-c", "import os; print(os.getpgid(0), os.nice(0))"]
    out = subprocess.run(line, capture_output=True, text=True).stdout.split()
    seen["subprocess"] = [int(out[0]), int(out[1]), int(out[1])]
    print(json.dumps(seen))
"""


def test_engine_processes_leave_the_group_however_multiprocessing_starts_them(tmp_path):
    """vLLM forks its engine core on a GPU (CUDA not yet initialized in the app) and spawns it
    on the CPU build: either way it must not hear the terminal's Ctrl-C (a group of its own)
    and runs at the engine's priority (`engine_nice`, every thread), while processes the app
    starts with `subprocess` (the UI, the reaper) stay in its group at its priority."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = tmp_path / "groups.py"
    script.write_text(GROUPS_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(ROOT)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    group, nice, _ = seen["app"]
    for method in ("fork", "spawn"):  # a group of their own, every thread 3 lower in priority
        assert seen[method][0] != group and seen[method][1:] == [nice + 3, nice + 3], seen
    assert seen["subprocess"] == seen["app"], seen  # the UI and the reaper: as the app


@pytest.mark.timeout(600)
def test_ctrl_c_to_the_group_ends_streams_and_the_benchmark_clearly(tmp_path):
    """With the UI as larger machines run it (two workers behind the front), so that the
    shutdown message crosses the front too."""
    from gradio_client import Client

    app = started(tmp_path, "--ui-workers", "2")
    chat, chat_events, _ = start(ui_chat, app, "Tell me a long story.", 900)
    api, api_events, _ = start(api_stream, app)
    client = Client(app.ui_url, verbose=False)
    bench = client.submit("full", 64, 256, None, api_name="/run_benchmark")
    wait_for(lambda: app.stats()["running"] > 2, 60, "the benchmark running", 0.05)
    processes = descendants(app)
    os.killpg(app.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    code, took = stopped(app, processes)
    assert code == 0
    chat.join(10)
    api.join(10)
    ended = chat_events[-1]
    assert ended["msg"] == "process_completed" and not ended["success"], ended
    assert "shutting down" in json.dumps(ended), ended
    errors = [e["error"]["message"] for e in api_events if "error" in e]
    assert errors and "shutting down" in errors[-1], api_events[-3:]
    with pytest.raises(Exception) as raised:  # the benchmark ended with an error, no result
        bench.result(timeout=30)
    assert "shutting down" in str(raised.value) or "did not finish" in str(raised.value)
    client.close()
    log = clean_log(app)
    assert "[app] SIGINT: shutting down" in log
    print(f"\nCtrl-C with a benchmark and two streams running: exit 0 after {took:.1f} s")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", ["SIGTERM to the group", "SIGINT to the pid", "SIGTERM to the pid"])
def test_each_stop_signal_ends_the_app_cleanly(tmp_path, how):
    app = started(tmp_path)
    _, api_events, _ = start(api_stream, app)
    processes = descendants(app)
    number = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT
    if how.endswith("group"):
        os.killpg(app.process.pid, number)
    else:
        app.process.send_signal(number)
    code, took = stopped(app, processes)
    assert code == 0
    time.sleep(0.5)
    assert any("shutting down" in json.dumps(e) for e in api_events), api_events[-3:]
    clean_log(app)
    print(f"\n{how}: exit 0 after {took:.1f} s")


@pytest.mark.timeout(600)
def test_a_second_ctrl_c_ends_a_slow_stop_at_once(tmp_path):
    app = started(tmp_path)
    start(api_stream, app)
    processes = descendants(app)
    os.killpg(app.process.pid, signal.SIGINT)
    time.sleep(0.3)  # the engine's own exit takes seconds on the CPU: the stop is under way
    os.killpg(app.process.pid, signal.SIGINT)
    code, took = stopped(app, processes, within=3)
    assert code == 128 + signal.SIGINT and took < 3
    assert "second signal: exiting now" in app.log.read_text(errors="replace")


@pytest.mark.timeout(600)
def test_kill_9_leaves_no_engine_process_behind(tmp_path):
    app = started(tmp_path)
    processes = [p for p in descendants(app) if "reaper" not in " ".join(p.cmdline())]
    assert any("EngineCore" in p.name() for p in processes), processes
    app.process.send_signal(signal.SIGKILL)
    app.process.wait(timeout=10)
    began = time.monotonic()
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f"left after kill -9 of the app: {described(alive)}"
    print(f"\nkill -9: the engine's processes gone {time.monotonic() - began:.1f} s later")


@pytest.mark.timeout(900)
def test_restarts_are_one_at_a_time_and_a_stop_cancels_one(tmp_path):
    from gradio_client import Client

    app = started(tmp_path)
    clients = [Client(app.ui_url, verbose=False) for _ in range(3)]
    clicks = [
        threading.Thread(target=c.predict, kwargs={"api_name": "/restart_engine"}) for c in clients
    ]
    for click in clicks:  # three Restart clicks at once build one engine
        click.start()
    for click in clicks:
        click.join(60)
    wait_for(lambda: app.stats()["phase"] == "ready", 400, "the restarted engine ready", 0.5)
    assert app.stats()["restarts"] == 1
    cores = [p for p in descendants(app) if "EngineCore" in p.name()]
    assert len(cores) == 1, cores
    # A restart under way when the stop comes is cancelled, its processes ended.
    clients[0].predict(api_name="/restart_engine")
    wait_for(lambda: app.stats()["phase"] == "loading", 60, "the second restart under way", 0.1)
    processes = descendants(app)
    app.process.send_signal(signal.SIGTERM)
    code, took = stopped(app, processes)
    for client in clients:
        client.close()
    assert code == 0
    log = app.log.read_text(errors="replace")
    assert log.count("[engine] ready:") == 2, "the cancelled restart came up after the stop"
    assert "Traceback" not in log and "EngineDeadError" not in log
    print(f"\na stop during a restart: exit 0 after {took:.1f} s")


@pytest.mark.timeout(300)
def test_a_port_in_use_is_a_clear_error_and_leaves_nothing_behind(tmp_path):
    """The engine starts in the background; the API's port is taken: exit status 2, said so,
    and the engine's start cut short with its processes."""
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT, TEST_ENGINE, TEST_PROFILE, free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "app.py"),
                "--profile",
                TEST_PROFILE,
                "--model",
                MODEL,
                "--port",
                str(free_port()),
                "--api-port",
                str(port),
                "--max-model-len",
                str(TEST_ENGINE["max_model_len"]),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"could not listen on port {port}" in done.stderr
    assert time.monotonic() - began < 60
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if f"--api-port {port}" in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, leftovers
