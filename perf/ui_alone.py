"""The UI process alone under chat load: the real Gradio UI in front of a stand-in server.

    python -m perf.ui_alone --users 64,256 --repeat 2
    python -m perf.ui_alone --users 256 --events 17 --gap 0.15   # 16-token events, GPU pace

The stand-in answers the UI's private API on a Unix socket as the real server does
(`server.internal`: the status, and each chat as NDJSON reply events) but makes its replies
up at a fixed pace: `--events` deltas of 16 tokens, `--gap` seconds apart, with no engine
and no vLLM. `python -m ui` runs as `app.py` starts it; `perf.load` then drives browser-like
Gradio sessions against it. What the table shows is the cost of the UI process (Gradio, the
chat handler, the socket client) and of the machine the load runs on, with the engine taken
out, so that a change to the UI can be measured on any machine in a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from perf.e2e import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_MESSAGE = "ready (a stand-in server: no engine)"


def stand_in_app(events: int, gap: float):
    """The stand-in server's ASGI app: `/internal/status` and `/internal/chat`."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    def line(payload: dict) -> bytes:
        return json.dumps(payload).encode() + b"\n"

    from engine.types import EngineStatus

    ready = EngineStatus("ready", READY_MESSAGE, progress=1.0, info={"model": "stand-in"})

    async def status(request):
        load = {"phase": "ready", "message": READY_MESSAGE, "restarts": 0, "unfinished": 0}
        return JSONResponse({"status": ready.to_dict(), "closing": False, **load})

    async def chat(request):
        await request.body()

        async def reply():
            for i in range(events):
                await asyncio.sleep(gap)
                yield line({"reasoning": "", "answer": "token " * 16, "tokens": 16 * (i + 1)})
            done = {"done": True, "tokens": 16 * events, "ttft_s": gap, "elapsed_s": gap * events}
            yield line({**done, "finish_reason": "length", "dropped_turns": 0})

        return StreamingResponse(reply(), media_type="application/x-ndjson")

    return Starlette(
        routes=[
            Route("/internal/status", status),
            Route("/internal/chat", chat, methods=["POST"]),
        ]
    )


def serve_stand_in(socket_path: str, events: int, gap: float) -> None:
    import uvicorn

    uvicorn.run(stand_in_app(events, gap), uds=socket_path, log_level="warning")


def wait_for_page(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the UI process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/config", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the UI did not answer within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.ui_alone",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", default="64,256")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--events", type=int, default=17, help="reply events per chat")
    parser.add_argument("--gap", type=float, default=0.15, help="seconds between events")
    parser.add_argument("--max-events", type=int, default=1100, help="the UI's --max-events")
    parser.add_argument("--serve", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_stand_in(args.serve, args.events, args.gap)
        return 0

    folder = tempfile.mkdtemp(prefix="ui-alone-")
    socket_path = os.path.join(folder, "server.sock")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    stand_in = subprocess.Popen(
        [sys.executable, "-m", "perf.ui_alone", "--serve", socket_path]
        + ["--events", str(args.events), "--gap", str(args.gap)],
        cwd=ROOT,
        env=env,
    )
    ui = subprocess.Popen(
        [sys.executable, "-m", "ui", "--socket", socket_path, "--port", str(port)]
        + ["--max-events", str(args.max_events)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_page(url, ui)
        from perf import load

        flags = ["--ui", url, "--api", "http://127.0.0.1:9", "--model", "stand-in"]
        flags += ["--paths", "ui", "--users", args.users, "--repeat", str(args.repeat)]
        waves = asyncio.run(load.run(load.parse_args(flags)))
        print(load.table(waves), flush=True)
        return 1 if any(w.failures for w in waves) else 0
    finally:
        for process in (ui, stand_in):
            process.terminate()
        for process in (ui, stand_in):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
