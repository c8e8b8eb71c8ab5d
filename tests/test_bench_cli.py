"""`python -m bench`: the headless benchmark as a user runs it (own engine, JSON + CSV out)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, offline_env

pytestmark = pytest.mark.slow


def bench(*args, timeout=900, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_replay_on_8_questions_writes_the_documented_json(tmp_path, questions):
    out = tmp_path / "result.json"
    done = bench(
        "--workload",
        "replay",
        "--limit",
        "8",
        "--model",
        "tiny-random",
        "--profile",
        "cpu",
        "--warmup-batch",
        "16",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "output tokens/s" in done.stdout
    result = json.loads(out.read_text())
    for key in (
        "workload",
        "n",
        "output_tokens",
        "wall_seconds",
        "tokens_per_second",
        "rouge_l_mean",
        "startup_seconds",
        "engine",
        "samples",
    ):
        assert key in result
    assert result["workload"] == "replay" and result["n"] == 8
    assert result["output_tokens"] == sum(s["output_tokens"] for s in result["samples"])
    assert result["tokens_per_second"] == pytest.approx(
        result["output_tokens"] / result["wall_seconds"], rel=1e-3
    )
    assert result["engine"]["profile"] == "cpu" and result["engine"]["vllm"]
    sample = result["samples"][0]
    assert {
        "question",
        "reference",
        "prediction",
        "rouge_l",
        "output_tokens",
        "ttft_s",
        "latency_s",
    } <= set(sample)
    csv_lines = out.with_suffix(".csv").read_text().strip().split("\n")
    assert csv_lines[0].startswith("index,question,reference") and len(csv_lines) >= 9


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workload", "sing"], "unknown workload"),
        (["--limit", "0"], "1..358"),
        (["--runs", "0"], "--runs"),
        (["--data", "/no/such/file.txt"], "not found"),
    ],
)
def test_bad_arguments_exit_with_a_message(args, message, questions):
    done = bench("--model", "tiny-random", "--profile", "cpu", *args, timeout=120)
    assert done.returncode != 0
    assert message in done.stderr


def test_offline_the_official_set_error_names_both_ways_out(tmp_path):
    """No network, no local copy: the message says what to do."""
    env = offline_env(tmp_path)
    done = bench("--model", "tiny-random", "--profile", "cpu", timeout=120, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "QWEN_DEMO_EVAL_FILE" in done.stderr and "--question-set sample" in done.stderr
