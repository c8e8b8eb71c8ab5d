"""Data parallelism: two vLLM engine ranks behind the one shared engine, on the CPU build.

- Choices without an engine: `--data-parallel-size auto` takes every visible GPU (fake GPUs
  here), the status names the GPUs and the idle ones, bad layouts are refused with a message,
  and `python -m launch.rank` refuses to start without the head's address and port.
- `two_ranks` (one app, `--data-parallel-size 2`): chat streams, Stop frees the request,
  `/predict` answers a batch, the benchmark's held batch reaches both ranks (the summary says
  how it split), the admission limit counts both ranks, a killed rank brings the engine back
  in the same server, and SIGTERM leaves no process and logs no EngineDeadError.
- Two hosts played by two processes: the app as head with one local rank, and
  `python -m launch.rank` as the second rank; a benchmark runs across both. A head whose
  remote rank never comes says so within its join timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine.models.sources import ResolvedModel
from engine.runtime.vllm_args import engine_kwargs
from engine.settings import devices, flags, profiles
from engine.settings.devices import Gpu
from tests.conftest import (
    ROOT,
    TEST_ENGINE,
    TEST_PROFILE,
    assistant_text,
    chat_args,
    free_port,
    get_json,
    launch_app,
    post,
    private_app,
    stop_app,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.slow

FOUR = tuple(Gpu(i, "NVIDIA H100 80GB HBM3", (9, 0), 79.6, f"GPU-{i}") for i in range(4))


# ---- choices, without an engine ------------------------------------------------------------
def test_auto_takes_every_visible_gpu(monkeypatch):
    monkeypatch.setattr(devices, "runs_on_cpu", lambda: False)
    monkeypatch.setattr(devices, "gpus", lambda: FOUR)
    assert flags.resolve_ranks("auto") == 4
    assert flags.resolve_ranks(2) == 2 and flags.resolve_ranks(None) is None
    monkeypatch.setattr(devices, "runs_on_cpu", lambda: True)
    assert flags.resolve_ranks("auto") == 1


def test_status_names_the_gpus_used_and_the_idle_ones(monkeypatch):
    monkeypatch.setattr(devices, "runs_on_cpu", lambda: False)
    monkeypatch.setattr(devices, "gpus", lambda: FOUR)
    two = profiles.make_config("hopper", data_parallel_size=2)
    where = devices.placement(two)
    assert where["device"] == "2 GPUs (0: NVIDIA H100 80GB HBM3, 1: NVIDIA H100 80GB HBM3)"
    assert "2 more GPUs visible and idle" in where["idle_gpus"]
    assert "--data-parallel-size auto" in where["idle_gpus"]
    assert devices.placement(profiles.make_config("hopper", data_parallel_size=4)) == {
        "device": "4 GPUs (0: NVIDIA H100 80GB HBM3, 1: NVIDIA H100 80GB HBM3, "
        "2: NVIDIA H100 80GB HBM3, 3: NVIDIA H100 80GB HBM3)",
        "data_parallel": 4,
        "idle_gpus": "",
    }
    spread = profiles.make_config(
        "h100", data_parallel_size=4, data_parallel_size_local=2, data_parallel_address="10.0.0.1"
    )
    assert devices.placement(spread)["device"].endswith("+ 2 data-parallel ranks on other hosts")
    model = ResolvedModel("mine", Path("/models/mine"), False, "local")
    assert engine_kwargs(spread, model)["data_parallel_size_local"] == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data_parallel_size": 0}, "data_parallel_size must be at least 1"),
        ({"data_parallel_size": 2, "data_parallel_size_local": 3}, "within 1..2"),
        ({"data_parallel_size": 2, "data_parallel_size_local": 1}, "data_parallel_address"),
    ],
)
def test_bad_layouts_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        profiles.make_config("cpu", **overrides)


def test_a_rank_without_the_heads_address_is_refused():
    done = subprocess.run(
        [sys.executable, "-m", "launch.rank", "--data-parallel-start-rank", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs --data-parallel-size, --data-parallel-size-local" in done.stderr


# ---- one app with two ranks ---------------------------------------------------------------
def engine_cores(pid: int) -> list[psutil.Process]:
    """vLLM's per-rank engine processes under the app (titles VLLM::EngineCore_DP<rank>)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "EngineCore" in child.name():
                found.append(child)
        except psutil.Error:
            continue
    return found


def summary_field(summary: str, name: str) -> str:
    match = re.search(rf"\| {re.escape(name)} \| ([^|]+) \|", summary)
    assert match, f"no {name!r} row in the summary:\n{summary}"
    return match.group(1).strip()


def run_benchmark(app, questions: int, workload: str = "replay") -> tuple[str, str]:
    from gradio_client import Client

    client = Client(app.ui_url, verbose=False)
    try:
        result = client.predict(workload, questions, 16, None, api_name="/run_benchmark")
    finally:
        client.close()
    return result[0], result[3]  # the progress line and the summary


class TestTwoRanks:
    @pytest.fixture(scope="class")
    def two_ranks(self, tmp_path_factory, questions, tiny_model_dir):
        yield from private_app(
            tmp_path_factory,
            "dp2",
            "--data-parallel-size",
            "2",
            "--max-queued-requests",
            "24",
            env={"QWEN_DEMO_API_TOKEN": ""},
            timeout=600,
        )

    def test_status_and_engine_processes(self, two_ranks):
        stats = two_ranks.stats()
        assert stats["phase"] == "ready", stats
        ranks = sorted(c.name() for c in engine_cores(two_ranks.process.pid))
        assert ranks == ["VLLM::EngineCore_DP0", "VLLM::EngineCore_DP1"], ranks
        log = two_ranks.log.read_text(errors="replace")
        assert "DP Coordinator" in log

    def test_held_batch_reaches_both_ranks_and_the_summary_says_how(self, two_ranks):
        progress, summary = run_benchmark(two_ranks, 16)
        assert "over 16 questions" in progress, progress
        assert summary_field(summary, "requests per rank") == "8 / 8"
        tokens = [
            int(x.replace(",", ""))
            for x in summary_field(summary, "output tokens per rank").split(" / ")
        ]
        total = int(summary_field(summary, "output tokens").replace(",", ""))
        assert len(tokens) == 2 and sum(tokens) == total and min(tokens) > 0
        assert summary_field(summary, "requests in the first engine step") == "16"
        assert two_ranks.wait_idle()["unfinished"] == 0

    def test_chat_streams_and_stop_frees_the_request(self, two_ranks):
        from gradio_client import Client

        client = Client(two_ranks.ui_url, verbose=False)
        try:
            final = client.predict(*chat_args("What is a warp?", 12), api_name="/chat")
            assert assistant_text(final)
            job = client.submit(*chat_args("Write a long essay on GPUs.", 900), api_name="/chat")
            wait_for(lambda: two_ranks.stats()["unfinished"] >= 1, 60, "the long chat to start")
            job.cancel()
            idle = two_ranks.wait_idle(timeout=60)
            assert idle["unfinished"] == 0, idle
        finally:
            client.close()

    def test_predict_batch_and_the_admission_limit_over_both_ranks(self, two_ranks):
        body = json.dumps({"prompt": [f"问题 {i}：什么是 SM？" for i in range(12)]}).encode()
        status, answer = post(two_ranks.api_url + "/predict", body, timeout=300)
        assert status == 200 and len(answer["response"]) == 12, (status, answer)
        too_many = json.dumps({"prompt": ["x"] * 30}).encode()  # over the limit of 24
        status, answer = post(two_ranks.api_url + "/predict", too_many, timeout=60)
        assert status == 503 and "server busy" in answer["error"], (status, answer)
        assert two_ranks.wait_idle()["unfinished"] == 0

    @pytest.mark.timeout(900)
    def test_a_killed_rank_brings_the_engine_back_in_the_same_server(self, two_ranks):
        pid = two_ranks.process.pid
        restarts = two_ranks.stats()["restarts"]
        rank1 = [c for c in engine_cores(pid) if c.name().endswith("DP1")]
        assert rank1, engine_cores(pid)
        rank1[0].send_signal(signal.SIGKILL)
        wait_for(
            lambda: get_json(two_ranks.api_url + "/")["status"] != "batch", 60, "the dead rank seen"
        )
        wait_for(
            lambda: get_json(two_ranks.api_url + "/")["status"] == "batch", 600, "a new engine"
        )
        assert two_ranks.process.pid == pid and two_ranks.process.poll() is None
        assert two_ranks.stats()["restarts"] == restarts + 1
        status, answer = post(two_ranks.api_url + "/predict", b'{"prompt": ["a", "b"]}')
        assert status == 200 and len(answer["response"]) == 2
        assert len(engine_cores(pid)) == 2

    @pytest.mark.timeout(300)
    def test_ctrl_c_to_the_group_stops_both_ranks_cleanly(self, two_ranks):
        children = psutil.Process(two_ranks.process.pid).children(recursive=True)
        logged_before = len(two_ranks.log.read_text(errors="replace"))
        began = time.monotonic()
        os.killpg(two_ranks.process.pid, signal.SIGINT)
        assert two_ranks.process.wait(timeout=15) == 0
        took = time.monotonic() - began
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left after the stop: {alive}"
        shutdown_log = two_ranks.log.read_text(errors="replace")[logged_before:]
        assert "[app] SIGINT: shutting down" in shutdown_log
        for bad in ("EngineDeadError", "Traceback", "restarting"):
            assert bad not in shutdown_log, shutdown_log[-3000:]
        print(f"\nCtrl-C with two ranks: exit 0 after {took:.1f} s")


@pytest.mark.timeout(900)
def test_kill_9_of_the_app_leaves_neither_rank_running(tmp_path_factory, questions):
    apps = private_app(
        tmp_path_factory,
        "dp2-kill9",
        "--data-parallel-size",
        "2",
        env={"QWEN_DEMO_API_TOKEN": ""},
        timeout=600,
    )
    app = next(apps)
    try:
        children = [
            p
            for p in psutil.Process(app.process.pid).children(recursive=True)
            if "reaper" not in " ".join(p.cmdline())
        ]
        assert len([p for p in children if "EngineCore" in p.name()]) == 2, children
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left after kill -9 of the app: {alive}"
    finally:
        apps.close()


# ---- two hosts, played by two processes ---------------------------------------------------
def rank_process(tmp_path, port: int) -> subprocess.Popen:
    """`python -m launch.rank` as the second host runs it: rank 1 of 2, same engine flags."""
    log = open(tmp_path / "rank1.log", "w")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launch.rank",
            "--data-parallel-start-rank",
            "1",
            *head_flags(port),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ},
        start_new_session=True,
    )


def head_flags(port: int) -> list[str]:
    """The flags the head and its remote rank share (engine flags must match)."""
    return [
        "--profile",
        TEST_PROFILE,
        "--model",
        "tiny-random",
        "--max-model-len",
        str(TEST_ENGINE["max_model_len"]),
        "--gpu-memory-utilization",
        str(TEST_ENGINE["gpu_memory_utilization"]),
        "--data-parallel-size",
        "2",
        "--data-parallel-size-local",
        "1",
        "--data-parallel-address",
        "127.0.0.1",
        "--data-parallel-rpc-port",
        str(port),
    ]


@pytest.mark.timeout(1200)
def test_a_rank_on_another_host_joins_and_serves_the_benchmark(tmp_path, questions):
    port = free_port()
    rank = rank_process(tmp_path, port)
    app = launch_app(tmp_path, *head_flags(port), "--warmup-batch", "8")
    try:
        wait_ready(app, timeout=600)
        progress, summary = run_benchmark(app, 8)
        assert "over 8 questions" in progress, progress
        assert summary_field(summary, "requests per rank") == "4 / 4"
        assert rank.poll() is None
    finally:
        stop_app(app)
        rank.send_signal(signal.SIGTERM)
        try:
            rank.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(rank.pid, signal.SIGKILL)


@pytest.mark.timeout(600)
def test_a_head_whose_remote_rank_never_comes_says_so(tmp_path, questions):
    app = launch_app(tmp_path, *head_flags(free_port()), "--data-parallel-join-timeout", "20")
    try:
        status = wait_for(
            lambda: (r := get_json(app.api_url + "/"))["status"] == "failed" and r,
            300,
            "the head to give up waiting",
        )
        assert "did not join" in status["detail"] and "python -m launch.rank" in status["detail"]
        assert app.process.poll() is None  # the web server keeps serving
    finally:
        assert stop_app(app) == 0


def test_the_summary_shows_the_split_only_over_several_ranks():
    from bench.report import rank_rows

    one = [{"rank": 0, "requests": 8, "output_tokens": 90, "engine_steps": 9, "mean_batch": 4.0}]
    assert rank_rows(one) == []
    two = one + [
        {"rank": 1, "requests": 8, "output_tokens": 1200, "engine_steps": 0, "mean_batch": None}
    ]
    assert dict(rank_rows(two)) == {
        "data-parallel ranks": "0 / 1",
        "requests per rank": "8 / 8",
        "output tokens per rank": "90 / 1,200",
        "engine steps per rank": "9 / 0",
        "mean running batch per rank": "4.0 / n/a",
    }
