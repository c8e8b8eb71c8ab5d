"""A serving sitting on a GPU machine: the app (or `vllm serve`) under chat load, then stopped.

    python -m perf.serving --out runs/serving -- --profile hopper --model MODEL
    python -m perf.serving --out runs/vllm --target vllm-serve -- MODEL --load-format dummy
    python -m perf.serving --out runs/old --root ../old-checkout -- --profile hopper --model MODEL
    python -m perf.serving --out runs/kill --users 16 --concurrency none --stop kill9 -- ...

For the app: start `app.py` in a process group of its own and wait until it is ready; run
`perf.load`'s waves (browser-like Gradio sessions and `/v1` streams, alternating, at each
`--users` count); count vLLM's JIT-monitor lines ("Triton kernel JIT compilation during
inference") logged after ready; run vLLM's load generator (`vllm bench serve`, random 128-token
prompts, 256 tokens out) at each `--concurrency`; then press Ctrl-C as a terminal does (SIGINT
to the process group) and record the seconds to exit, the exit status, processes left and the
GPU memory in use afterwards. For `vllm serve` (vLLM's defaults): the same without the UI.
`--py-spy` samples the server's processes (the app or `vllm serve`, vLLM's engine core, the UI
workers and the front) with py-spy while the waves run and during each `vllm bench serve`, and
lists where each spends its time. Everything goes to `--out`:
`serving.json` and the server's log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

from perf.e2e import free_port

ROOT = Path(__file__).resolve().parent.parent
JIT = "JIT compilation during inference"


def gpu_memory_mib() -> list[int]:
    """Memory in use on each GPU (nvidia-smi), [] where there is none."""
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(x) for x in text.split() if x.isdigit()]


def wait_ready(url: str, server: subprocess.Popen, timeout: float, app: bool) -> float:
    """Seconds until the server is ready: the app's `GET /` says "batch"; `vllm serve`'s
    `/health` answers 200."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + ("/" if app else "/health"), timeout=5) as r:
                body = r.read()
            if not app or json.loads(body).get("status") == "batch":
                return time.monotonic() - began
        except (OSError, ValueError):
            pass
        time.sleep(1)
    raise TimeoutError(f"not ready within {timeout:.0f} s")


def wait_ui_warm(log: Path, timeout: float = 90) -> float | None:
    """Seconds until the app says its UI workers are warm (its `[ui] ... warm in` line), None
    if it never does (an app from before that warm-up)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if "UI worker(s) warm in" in log.read_text(errors="replace"):
            return time.monotonic() - began
        time.sleep(0.5)
    return None


def start(args, log: Path) -> tuple[subprocess.Popen, str, str | None]:
    """The server under test, its API address and (app only) its UI address."""
    api_port, ui_port = free_port(), free_port()
    if args.target == "app":
        cmd = [
            sys.executable,
            "-u",
            str(args.root / "app.py"),
            "--port",
            str(ui_port),
            "--api-port",
            str(api_port),
            *args.server_flags,
        ]
        ui = f"http://127.0.0.1:{ui_port}"
    else:
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.cli.main",
            "serve",
            *args.server_flags,
            "--port",
            str(api_port),
        ]
        ui = None
    server = subprocess.Popen(
        cmd, cwd=args.root, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    return server, f"http://127.0.0.1:{api_port}", ui


def server_processes(server: subprocess.Popen) -> dict[str, int]:
    """The pids worth sampling: the server itself, vLLM's engine core(s) and (app only) its UI
    processes: each Gradio worker (`ui`, `ui-1`, ...) and the front that shares the pages."""
    import psutil

    found = {"server": server.pid}
    workers = cores = 0
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            line, name = child.cmdline(), child.name()
        except psutil.Error:
            continue
        if name.startswith("VLLM::EngineCore") or "EngineCore" in " ".join(line[:1]):
            found["engine-core" if not cores else f"engine-core-{cores}"] = child.pid
            cores += 1
        elif "API process" in " ".join(line[:1]):  # the app's --api-processes
            found[f"api-{line[0].rsplit(' ', 1)[-1]}"] = child.pid
        elif "launch.ui_front" in line or (line and line[0].endswith("caddy")):
            found["front"] = child.pid
        elif "ui" in line[1:4] and "-m" in line:
            found["ui" if not workers else f"ui-{workers}"] = child.pid
            workers += 1
    return found


def start_sampling(pids: dict[str, int], phase: str, out: Path) -> list[tuple]:
    """py-spy on each pid until `stop_sampling`, collapsed stacks to `out` (nothing without
    py-spy)."""
    import shutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found: no sampling", flush=True)
        return []
    runs = []
    for name, pid in pids.items():
        path = out / f"pyspy-{phase}-{name}.txt"
        cmd = [spy, "record", "--pid", str(pid), "--duration", "900", "--rate", "50"]
        cmd += ["--format", "raw", "--output", str(path), "--nonblocking"]
        log = open(out / f"pyspy-{phase}-{name}.log", "w")
        runs.append((name, path, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
    return runs


def stop_sampling(runs: list[tuple]) -> dict:
    """Stop the samplers (py-spy writes its stacks on SIGINT) and summarise them."""
    for _, _, proc in runs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    return sampling_summary(runs)


def frame_name(frame: str) -> str:
    """A py-spy frame without its folder and line: "function (file.py)"."""
    return re.sub(r"\(.*/|:\d+\)$", lambda m: "(" if m.group(0)[0] == "(" else ")", frame)


def sampling_summary(runs: list[tuple], top: int = 25) -> dict:
    """Per process: the functions with the most samples on the stack (inclusive) and at its
    top (self), as shares of all samples."""
    summary = {}
    for name, path, proc in runs:
        try:
            proc.wait(timeout=120)
            lines = path.read_text(errors="replace").splitlines()
        except (OSError, subprocess.TimeoutExpired):
            summary[name] = {"error": "no samples"}
            continue
        total, inclusive, own = 0, {}, {}
        for stack, n in raw_samples(lines):
            total += n
            frames = [frame_name(f) for f in stack if f]
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + n
            if frames:
                own[frames[-1]] = own.get(frames[-1], 0) + n
        summary[name] = {
            "samples": total,
            "split": sample_split(lines),
            "inclusive": shares(inclusive, total, top),
            "self": shares(own, total, top),
        }
    return summary


def raw_samples(lines: list[str]):
    """(stack frames root first, count) of each sample line of a py-spy raw file."""
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            yield stack.split(";"), int(count)


def shares(table: dict[str, int], total: int, top: int | None = None) -> list[tuple[str, float]]:
    """`table`'s entries as shares of `total`, largest first (the `top` largest)."""
    best = sorted(table.items(), key=lambda kv: -kv[1])[:top]
    return [(key, round(n / max(total, 1), 3)) for key, n in best]


# Where a server process's time goes, by the innermost frame that belongs to a part of the path
# from the engine core to the people (matched on the frame's file path): the first frame from
# the leaf up that matches decides a sample's part; vLLM's own files are matched before the
# app's `protocol.py`, which shares its name with vLLM's.
PARTS = (
    ("app: reasoning_content alias", ("(server/openai.py",)),
    ("app: UI private socket (NDJSON lines)", ("(server/internal.py",)),
    ("app: engine wrapper, guard, course API", ("(engine/", "(server/")),
    ("vLLM: reasoning parser", ("vllm/reasoning/",)),
    ("vLLM: OpenAI serving (events, JSON)", ("vllm/entrypoints/",)),
    (
        "vLLM: output handling (detokenize, RequestOutput)",
        ("output_processor", "detokenizer", "async_llm", "vllm/tokenizers", "tokenizers/"),
    ),
    ("vLLM: engine client (ZMQ, msgpack)", ("core_client", "serial_utils", "zmq/")),
    ("app: UI private socket (NDJSON lines)", ("(protocol.py",)),
    (
        "HTTP & ASGI (uvicorn, starlette, FastAPI, middleware)",
        ("uvicorn/", "starlette/", "fastapi/", "instrumentator", "h11/", "httptools/"),
    ),
    ("Gradio and the UI", ("gradio/", "gradio_client/", "(ui/")),
    (
        "event loop & threads (C code under them: I/O, callbacks)",
        ("threading.py", "asyncio/", "uvloop", "runners.py"),
    ),
)


def sample_split(lines: list[str]) -> list[tuple[str, float]]:
    """Shares of a py-spy raw file's samples by part of the serving path (`PARTS`), the
    rest as "other"; largest first."""
    counts: dict[str, int] = {}
    total = 0
    for stack, n in raw_samples(lines):
        total += n
        part = "other"
        for frame in reversed(stack):
            hit = next((p for p, keys in PARTS if any(k in frame for k in keys)), None)
            if hit:
                part = hit
                break
        counts[part] = counts.get(part, 0) + n
    return shares(counts, total)


def load_waves(args, api: str, ui: str | None) -> list[dict]:
    from perf import load

    paths = "ui,api" if ui else "api"
    argv = [
        "--api",
        api,
        "--ui",
        ui or "http://127.0.0.1:9",
        "--paths",
        paths,
        "--users",
        args.users,
        "--repeat",
        str(args.repeat),
        "--max-tokens",
        str(args.max_tokens),
    ]
    waves = asyncio.run(load.run(load.parse_args(argv)))
    print(load.table(waves), flush=True)
    return [asdict(w) for w in waves]


def bench_serve(api: str, concurrency: int, out: Path) -> dict:
    """vLLM's load generator at one concurrency; its headline figures."""
    name = f"bench-serve-{concurrency}.json"
    cmd = [
        sys.executable,
        "-m",
        "perf.serve",
        "--base-url",
        api,
        "--backend",
        "openai-chat",
        "--endpoint",
        "/v1/chat/completions",
        "--dataset-name",
        "random",
        "--random-input-len",
        "128",
        "--random-output-len",
        "256",
        "--num-prompts",
        str(max(64, 4 * concurrency)),
        "--max-concurrency",
        str(concurrency),
        "--ignore-eos",
        "--save-result",
        "--result-dir",
        str(out),
        "--result-filename",
        name,
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (out / f"bench-serve-{concurrency}.log").write_text(done.stdout + done.stderr)
    try:
        result = json.loads((out / name).read_text())
    except (OSError, ValueError):
        return {"concurrency": concurrency, "error": done.stderr[-500:]}
    keys = (
        "completed",
        "failed",
        "output_throughput",
        "median_ttft_ms",
        "p99_ttft_ms",
        "median_itl_ms",
        "p99_itl_ms",
        "median_tpot_ms",
    )
    return {"concurrency": concurrency, **{k: result.get(k) for k in keys}}


def stop(server: subprocess.Popen, log: Path, how: str, gpu_before: list[int]) -> dict:
    """Stop the server as `how` says and report what the stop left: `sigint` is a terminal's
    Ctrl-C (SIGINT to the process group), `kill9` a SIGKILL to the server's pid alone (then
    the seconds until the GPU's memory is back to what it was before the start)."""
    import psutil

    children = psutil.Process(server.pid).children(recursive=True)
    logged_before = log.stat().st_size
    began = time.monotonic()
    if how == "kill9":
        os.kill(server.pid, signal.SIGKILL)
    else:
        os.killpg(server.pid, signal.SIGINT)
    try:
        code = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        code = "killed after 60 s"
    took = time.monotonic() - began
    freed = None
    while gpu_before and time.monotonic() - began < 60:
        now = gpu_memory_mib()
        if all(n <= b + 1024 for n, b in zip(now, gpu_before, strict=False)):
            freed = round(time.monotonic() - began, 2)
            break
        time.sleep(0.25)
    _, alive = psutil.wait_procs(children, timeout=10)
    text = log.read_text(errors="replace")
    with log.open("rb") as file:
        file.seek(logged_before)
        tail = file.read().decode(errors="replace")  # what was logged after the signal
    return {
        "how": how,
        "exit": code,
        "seconds": round(took, 2),
        "gpu_memory_freed_after_s": freed,
        "left": [p.pid for p in alive],
        "gpu_memory_mib_after": gpu_memory_mib(),
        "tracebacks_in_stop": tail.count("Traceback"),
        "engine_dead_errors_in_stop": tail.count("EngineDeadError"),
        "restarts_in_log": text.count("restarting"),
    }


def jit_lines(log: Path) -> list[str]:
    """vLLM's JIT-monitor lines logged after the server said ready."""
    text = log.read_text(errors="replace")
    after = text[text.find("[engine] ready") :] if "[engine] ready" in text else text
    return sorted(
        {re.sub(r"^.*?\] ", "", line)[:160] for line in after.splitlines() if JIT in line}
    )


def main(argv: list[str] | None = None) -> int:
    # a `timeout` around this tool sends SIGTERM: stop the server and keep the report
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        prog="python -m perf.serving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--target", choices=("app", "vllm-serve"), default="app")
    parser.add_argument("--users", default="1,16,64,256")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", default="32,256", help="vllm bench serve's, or none")
    parser.add_argument("--timeout", type=float, default=400, help="seconds to get ready")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="sample every server process with py-spy during the waves and each bench serve",
    )
    parser.add_argument("--stop", choices=("sigint", "kill9"), default="sigint")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app.py runs")
    parser.add_argument("server_flags", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.server_flags = [f for f in args.server_flags if f != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"{args.target}.log"
    report: dict = {
        "target": args.target,
        "flags": args.server_flags,
        "gpu_memory_mib_before": gpu_memory_mib(),
    }
    server, api, ui = start(args, log)
    try:
        report["ready_s"] = round(wait_ready(api, server, args.timeout, args.target == "app"), 1)
        if args.target == "app":
            warms = (args.root / "launch" / "ui_warmup.py").exists()  # older apps do not
            warm = wait_ui_warm(log, timeout=90 if warms else 0)
            report["ui_warm_after_ready_s"] = None if warm is None else round(warm, 1)
        print(f"ready in {report['ready_s']} s", flush=True)
        pids = server_processes(server) if args.py_spy else {}
        sampling = start_sampling(pids, "waves", args.out) if pids else []
        report["waves"] = load_waves(args, api, ui)
        if sampling:
            report["py_spy"] = {"waves": stop_sampling(sampling)}
        report["jit_after_ready"] = jit_lines(log)
        levels = [int(c) for c in args.concurrency.split(",") if c.isdigit()]
        report["bench_serve"] = []
        for concurrency in levels:
            sampling = start_sampling(pids, f"c{concurrency}", args.out) if pids else []
            report["bench_serve"].append(bench_serve(api, concurrency, args.out))
            if sampling:
                report["py_spy"][f"c{concurrency}"] = stop_sampling(sampling)
        report["jit_after_ready"] = jit_lines(log)
    finally:
        if server.poll() is None:
            report["stop"] = stop(server, log, args.stop, report["gpu_memory_mib_before"])
        (args.out / "serving.json").write_text(json.dumps(report, indent=1))
    shown = {k: v for k, v in report.items() if k not in ("waves", "py_spy")}
    print(json.dumps(shown, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
