"""One API process: the HTTP API and the UI's chats served by a client of the app's engine core.

The app's main process starts vLLM's engine core with a slot per API process
(`engine.runtime.slots`) and starts this in a process of its own for each slot but its own
(`launch.api_processes`). Here the same service as in the main process runs on that slot:
an `EngineService` whose `AsyncLLM` is a client of the running, warm engine core (vLLM's
multi-API-server mode), with the same public app (the course routes and vLLM's OpenAI API,
behind the guard) accepting on the API port's socket, which every API process shares, and the
same private app on a Unix socket of its own, which some of the UI workers send their chats to.
Every response carries `x-api-process: N`.

The main process stops it with SIGTERM (replies in flight end with "the server is shutting
down"); it never restarts the engine, and it exits when the engine is gone.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

from engine.models.sources import ResolvedModel
from engine.runtime.slots import Slot
from engine.settings.config import EngineConfig

READY_TIMEOUT_S = 300


@dataclass
class ApiProcessSpec:
    """What an API process needs from the main process (sent to it when it is started)."""

    position: int  # 1, 2, ...: its place among the API processes (the main process is 0)
    config: EngineConfig
    model: ResolvedModel
    slot: Slot
    api_socket: socket.socket | None  # the API port's listening socket, shared
    socket_path: str  # its private Unix socket, for the UI workers' chats
    token: str | None
    predict_max_tokens: int
    admissions: object  # the admission count all API processes share (an entry per slot)


def run(spec: ApiProcessSpec, ready) -> None:
    """The process's body (`multiprocessing`'s target): serve until SIGTERM or SIGINT.
    `ready` (a pipe's end) gets the engine's phase once this process serves, or failed."""
    from engine import EngineService
    from launch.signals import StopSignals
    from server import HttpServers, build_apps

    signals = StopSignals()
    _name_process(f"qwen3-demo API process {spec.position}")
    service = EngineService(
        spec.config, attach=spec.slot, model=spec.model, admissions=spec.admissions
    )
    public, private = build_apps(
        service, spec.token, spec.predict_max_tokens, openai=spec.api_socket is not None
    )
    servers = HttpServers(service)
    headers = [("x-api-process", str(spec.position))]
    if spec.api_socket is not None:
        servers.add(public, sock=spec.api_socket, headers=headers)
    servers.add(private, uds=spec.socket_path, headers=headers)
    service.start()
    status = service.wait_ready(READY_TIMEOUT_S)
    if status.ready:
        servers.start()
    ready.send(status.phase if status.ready else f"failed: {status.message}")
    while status.ready and not signals.wait(0.5):
        if service.status().phase in ("failed", "stopped"):
            break
    service.stop()  # replies in flight end with "the server is shutting down"
    servers.stop(timeout=3)
    service.shutdown()
    sys.stderr.flush()
    os._exit(0)


def _name_process(title: str) -> None:
    """The process's name in `ps` and `top` (vLLM names its own processes the same way)."""
    try:
        import setproctitle  # a dependency of vLLM's
    except ImportError:
        return
    setproctitle.setproctitle(title)
