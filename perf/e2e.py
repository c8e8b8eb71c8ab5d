"""The product end to end on a GPU machine: start `app.py`, use it as people do, stop it.

    python -m perf.e2e --out runs/e2e -- --profile hopper --model MODEL --data-parallel-size 2

Starts the app on free loopback ports, waits until its engine is ready, then:
1. streams a chat reply through Gradio's client (`/chat`): chunks, time to the first one;
2. runs the Benchmark tab's `/run_benchmark` (replay, 358 questions) through Gradio's client;
3. sends the 358 questions as one `POST /predict` list (the course evaluator's call);
4. streams a chat completion from the OpenAI-compatible API (`/v1/chat/completions`, as the
   `openai` client does) and reads `/metrics`;
5. stops the app with SIGTERM and checks that it exits 0, leaves no process behind and logged
   no `EngineDeadError` or traceback.
Writes `e2e.json` (each step's figures and outcome) and `app.log` under `--out`; exits 1 if a
step failed. The app's flags follow `--`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from launch.ui_process import free_port

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "CUDA 中的 warp 是什么？请简要说明。"


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def post_json(url: str, body: dict, timeout: float) -> tuple[int, dict]:
    data = json.dumps(body, ensure_ascii=False).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


def wait_ready(api: str, app: subprocess.Popen, timeout: float) -> float:
    """Seconds until `GET /` says the engine is warm; raises if it fails or exits."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if app.poll() is not None:
            raise RuntimeError(f"the app exited with {app.returncode} before it was ready")
        try:
            status = get_json(api + "/", timeout=5)
        except OSError:
            status = {}
        if status.get("status") == "batch":
            return time.monotonic() - began
        if status.get("status") == "failed":
            raise RuntimeError(f"the engine failed to start: {status.get('detail')}")
        time.sleep(1)
    raise TimeoutError(f"not ready within {timeout:.0f} s")


def chat(ui: str) -> dict:
    """One streamed reply through `/chat`: chunks seen, seconds to the first, final length."""
    from gradio_client import Client

    client = Client(ui, verbose=False)
    began, first, chunks, last = time.monotonic(), None, 0, None
    job = client.submit(
        QUESTION, "You are a helpful assistant.", False, 0.7, 0.8, 20, 128, api_name="/chat"
    )
    for output in job:
        chunks += 1
        first = first if first is not None else time.monotonic() - began
        last = output
    text = "".join(m.get("content") or "" for m in last or [] if isinstance(m.get("content"), str))
    return {
        "chunks": chunks,
        "first_chunk_s": first,
        "seconds": time.monotonic() - began,
        "characters": len(text),
    }


def benchmark(ui: str, workload: str) -> dict:
    """The Benchmark tab's run through `/run_benchmark`: its closing line and figures."""
    from gradio_client import Client

    client = Client(ui, verbose=False)
    began = time.monotonic()
    progress, *_, summary, _table, _files, _compare, _set = client.predict(
        workload, 358, 256, None, "official", "auto", api_name="/run_benchmark"
    )
    rate = re.search(r"([\d,.]+) output tokens/s", progress)
    ranks = re.search(r"\| requests per rank \| ([^|]+) \|", summary or "")
    return {
        "progress": progress,
        "tokens_per_second": float(rate.group(1).replace(",", "")) if rate else None,
        "requests_per_rank": ranks.group(1).strip() if ranks else None,
        "seconds": time.monotonic() - began,
    }


def predict_all(api: str) -> dict:
    """The 358 questions as one `POST /predict` list, as the course evaluator sends them."""
    from eval_data import load_course_file, official_question_set

    questions = [p.question for p in load_course_file(official_question_set())]
    began = time.monotonic()
    status, body = post_json(api + "/predict", {"prompt": questions}, timeout=600)
    answers = body.get("response") or []
    return {
        "http_status": status,
        "answers": len(answers),
        "non_empty": sum(1 for a in answers if a.strip()),
        "seconds": time.monotonic() - began,
    }


def openai_stream(api: str) -> dict:
    """A streamed `/v1/chat/completions` (server-sent events): events, first one, tokens."""
    models = get_json(api + "/v1/models")["data"]
    body = {
        "model": models[0]["id"],
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    request = urllib.request.Request(
        api + "/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    began, first, events, usage = time.monotonic(), None, 0, None
    with urllib.request.urlopen(request, timeout=120) as resp:
        for line in resp:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            events += 1
            first = first if first is not None else time.monotonic() - began
            usage = json.loads(line[6:]).get("usage") or usage
    with urllib.request.urlopen(api + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    generated = [
        line for line in metrics.splitlines() if line.startswith("vllm:generation_tokens_total")
    ]
    return {
        "model": models[0]["id"],
        "events": events,
        "first_event_s": first,
        "seconds": time.monotonic() - began,
        "usage": usage,
        "metrics_generation_tokens": generated,
    }


def stop(app: subprocess.Popen, log: Path) -> dict:
    """SIGTERM the app; its exit code, processes left behind, and errors in its log."""
    import psutil

    children = psutil.Process(app.pid).children(recursive=True)
    app.send_signal(signal.SIGTERM)
    try:
        code = app.wait(timeout=120)
    except subprocess.TimeoutExpired:
        app.kill()
        code = "killed after 120 s"
    time.sleep(3)
    left = [f"{p.pid} {p.name()}" for p in children if p.is_running() and p.status() != "zombie"]
    text = log.read_text(errors="replace")
    return {
        "exit_code": code,
        "processes_left": left,
        "engine_dead_errors": text.count("EngineDeadError"),
        "tracebacks": text.count("Traceback (most recent call last)"),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m perf.e2e", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/e2e"))
    parser.add_argument("--ready-timeout", type=float, default=900)
    parser.add_argument("--workload", default="replay")
    args = parser.parse_args(own)
    args.out.mkdir(parents=True, exist_ok=True)
    ui_port, api_port = free_port(), free_port()
    ui, api = f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{api_port}"
    log = args.out / "app.log"
    cmd = [sys.executable, "-u", "app.py", "--port", str(ui_port), "--api-port", str(api_port)]
    app = subprocess.Popen(
        [*cmd, *app_flags],
        cwd=ROOT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        start_new_session=True,
    )
    report: dict = {"app_flags": app_flags}
    steps = (
        ("ready_s", lambda: wait_ready(api, app, args.ready_timeout)),
        ("status", lambda: get_json(api + "/stats")),
        ("chat", lambda: chat(ui)),
        ("benchmark", lambda: benchmark(ui, args.workload)),
        ("predict", lambda: predict_all(api)),
        ("openai", lambda: openai_stream(api)),
        ("after", lambda: get_json(api + "/stats")),
    )
    ok = True
    try:
        for name, step in steps:
            try:
                report[name] = step()
            except Exception as err:  # noqa: BLE001  (recorded, and the next steps still run)
                report[name] = {"error": f"{type(err).__name__}: {err}"}
                ok = False
                if name == "ready_s":
                    break
            print(f"{name}: {json.dumps(report[name], ensure_ascii=False)[:400]}", flush=True)
    finally:
        report["shutdown"] = stop(app, log)
        print(f"shutdown: {report['shutdown']}", flush=True)
    (args.out / "e2e.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    clean = report["shutdown"]
    ok = ok and clean["exit_code"] == 0 and not clean["processes_left"]
    return 0 if ok and not clean["engine_dead_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
