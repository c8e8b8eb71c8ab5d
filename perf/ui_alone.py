"""The UI alone under chat load: the real Gradio UI workers in front of a stand-in server.

    python -m perf.ui_alone --users 64,256 --repeat 2
    python -m perf.ui_alone --users 256 --events 17 --gap 0.15   # 16-token events, GPU pace
    python -m perf.ui_alone --users 256 --ui-workers 4           # four workers behind the front

The stand-in answers the UI's private API on a Unix socket as the real server does
(`server.internal`: the status, and each chat as NDJSON reply events) but makes its replies
up at a fixed pace: `--events` deltas of 16 tokens, `--gap` seconds apart, with no engine
and no vLLM. The UI's processes run as `app.py` starts them (`launch.ui_process.UiGroup`:
`--ui-workers` Gradio workers, behind the front when more than one); `perf.load` then drives
browser-like Gradio sessions against them. What the table shows is the cost of the UI's
processes (Gradio, the chat handler, the socket client, the front) and of the machine the load
runs on, with the engine taken out, so that a change to the UI can be measured on any machine
in a minute.
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


def wait_for_page(url: str, ui, timeout: float = 120) -> None:
    """Until every UI worker is up and the page answers at `url`."""
    deadline = time.monotonic() + timeout
    pending = list(ui.worker_urls)
    while time.monotonic() < deadline:
        for process in ui.processes:
            if process.process.poll() is not None:
                raise RuntimeError(f"a UI process exited with {process.process.returncode}")
        try:
            while pending:
                with urllib.request.urlopen(pending[0] + "/config", timeout=5):
                    pending.pop(0)
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
    parser.add_argument("--ui-workers", type=int, default=1, help="Gradio worker processes")
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
    from launch.ui_process import UiGroup

    worker_argv = ["--socket", socket_path, "--max-events", str(args.max_events)]
    worker_argv += ["--operator", "everyone"]
    ui = UiGroup(worker_argv, "127.0.0.1", port, args.ui_workers, {})
    ui.start()
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
        ui.stop()
        stand_in.terminate()
        try:
            stand_in.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stand_in.kill()


if __name__ == "__main__":
    sys.exit(main())
