"""Qwen3-0.6B on one shared vLLM engine: a Gradio UI (chat, live benchmark) and one HTTP API
port with the course evaluator's routes and vLLM's OpenAI-compatible server.

    python app.py                        # UI on :7860, HTTP API on :8000, model picked for you
    python app.py --share --auth me:pw --operator-key KEY   # public link, with logins
    python app.py --help                 # every flag

The app's processes:
- this one: the engine (vLLM's `AsyncLLM`) and the HTTP API on one event loop, serving the API
  port and a private Unix socket for the UI (`engine.runtime.service`, `server`);
- vLLM's engine core, one process per data-parallel rank on this host, in a process group of
  their own (`launch.processes`);
- with `--api-processes N` above 1, N - 1 more API processes, each its own client of the
  engine core, sharing the API port and the UI's chats with this one (`launch.api_processes`);
- the UI workers (`python -m ui`, Gradio, on loopback; `--ui-workers`, `launch.ui_process`),
  which reach the engine over the private socket;
- the front on the UI's public port (`python -m launch.ui_front`, which becomes Caddy), keeping
  each browser on its worker;
- a watcher that ends the processes this one started (vLLM's, the UI's) should it be killed
  outright (`launch.reaper`).

Who may restart the engine and run benchmarks is decided here, from who can reach the app
(`launch.exposure`), and handed to every worker. Ctrl-C or SIGTERM (to this process or to its
whole group) stops them all: replies in flight end with "the server is shutting down", then
everything exits with status 0 within seconds; a second signal ends it at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from engine import DEFAULT_MODEL, EngineService, add_config_arguments, config_from_args  # noqa: E402
from engine.models.sources import HUBS, cached_model, can_download  # noqa: E402
from launch.signals import StopSignals  # noqa: E402
from launch.ui_process import auto_workers  # noqa: E402
from launch.ui_warmup import warm_in_background  # noqa: E402

OFFLINE_FALLBACK = "tiny-random"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=7860, help="UI port")
    parser.add_argument(
        "--api-port",
        type=int,
        default=8000,
        help="HTTP API port: the course's GET / and POST /predict, and vLLM's OpenAI-compatible "
        "API (/v1/...) with Prometheus /metrics; 0 turns it off",
    )
    parser.add_argument(
        "--api-token",
        default=os.environ.get("QWEN_DEMO_API_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on /predict and on every OpenAI API route "
        "but /health, /ping, /version and the docs (env QWEN_DEMO_API_TOKEN)",
    )
    parser.add_argument(
        "--predict-max-tokens",
        type=int,
        default=256,
        help="new-token budget of each /predict answer",
    )
    parser.add_argument("--share", action="store_true", help="open a public Gradio share link")
    parser.add_argument(
        "--ui-workers",
        default="auto",
        help="Gradio processes that share the pages (each browser stays on one): N, or auto "
        "(one per four CPU cores, at least two and at most eight)",
    )
    parser.add_argument(
        "--auth",
        default=os.environ.get("QWEN_DEMO_AUTH"),
        metavar="USER:PASS",
        help="protect the UI with a login (env QWEN_DEMO_AUTH)",
    )
    parser.add_argument(
        "--operator-key",
        default=os.environ.get("QWEN_DEMO_OPERATOR_KEY"),
        metavar="KEY",
        help="unlocks restarting the engine and running benchmarks on the page (env "
        "QWEN_DEMO_OPERATOR_KEY); with --share, --auth or a non-loopback --host those "
        "controls are off without it",
    )
    parser.add_argument(
        "--no-auto-restart",
        action="store_true",
        help="do not restart the engine by itself if its process dies",
    )
    add_config_arguments(parser)
    # The Docker image bakes a model into QWEN_DEMO_MODEL; a build without it falls back.
    baked = os.environ.get("QWEN_DEMO_MODEL")
    parser.set_defaults(model=baked if baked and os.path.exists(baked) else None)
    args = parser.parse_args(argv)
    if args.auth and ":" not in args.auth:
        parser.error("--auth takes USER:PASS")
    if args.predict_max_tokens < 1:
        parser.error("--predict-max-tokens must be at least 1")
    if args.ui_workers == "auto":
        args.ui_workers = auto_workers()
    elif not args.ui_workers.isdigit() or not 1 <= int(args.ui_workers) <= 64:
        parser.error("--ui-workers takes a number from 1 to 64, or auto")
    args.ui_workers = int(args.ui_workers)
    return args


def choose_model(requested: str | None) -> str:
    """The model to serve: the one asked for, else Qwen3-0.6B (downloaded by the engine with
    progress in the status line), else, offline, the built-in tiny-random."""
    if requested:
        return requested
    if cached_model(DEFAULT_MODEL) or can_download():
        return DEFAULT_MODEL
    print(
        f"[model] offline: cannot reach {' or '.join(HUBS.values())} to download "
        f"{DEFAULT_MODEL}.\n[model] OFFLINE: serving the built-in '{OFFLINE_FALLBACK}' model "
        "(random weights: replies are gibberish, throughput figures are real).",
        flush=True,
    )
    return OFFLINE_FALLBACK


def ui_group(args: argparse.Namespace, socket_path: str, config):
    """The UI's processes for these flags: the workers, told who the operator is, and the
    front on the public address (not started)."""
    from launch.exposure import decide_exposure
    from launch.ui_process import UiGroup

    exposure = decide_exposure(args.share, args.auth, args.host, args.operator_key)
    argv = ui_argv(args, socket_path, config) + ["--operator", exposure.operator]
    secrets = {"QWEN_DEMO_AUTH": args.auth, "QWEN_DEMO_OPERATOR_KEY": args.operator_key}
    folder = os.path.dirname(socket_path)
    chats = [socket_path] + [api_socket_path(folder, k) for k in range(1, config.api_processes)]
    return UiGroup(
        argv, args.host, args.port, args.ui_workers, secrets, share=args.share, chat_sockets=chats
    )


def ui_argv(args: argparse.Namespace, socket_path: str, config) -> list[str]:
    """Every UI worker's flags but where it listens and who operates (its secrets go in its
    environment)."""
    argv = ["--socket", socket_path, "--api-port", str(args.api_port)]
    argv += ["--max-new-tokens-cap", str(config.max_new_tokens_cap)]
    # Every request the engine admits runs at once in Gradio too; past that the server says busy.
    argv += ["--max-queue", str(2 * config.admission_limit + 64)]
    return argv + ["--max-events", str(config.admission_limit + 64)]


def api_processes(args: argparse.Namespace, config, service, run_dir: str):
    """With `--api-processes` above 1: the API port's listening socket, which every API
    process accepts on (None without the API port), and the processes beside this one,
    started on each new engine before it says ready (`launch.api_processes`)."""
    if config.api_processes <= 1:
        return None
    from dataclasses import replace

    from launch.api_process import ApiProcessSpec
    from launch.api_processes import ApiProcesses

    api_socket = listening_socket(args.host, args.api_port) if args.api_port else None
    quiet = replace(config, warmup_batch=0)  # the engine core is warm when they start

    def spec_for(position: int, engine, slot) -> ApiProcessSpec:
        return ApiProcessSpec(
            position,
            quiet,
            engine.life.model,
            slot,
            api_socket,
            api_socket_path(run_dir, position),
            args.api_token,
            args.predict_max_tokens,
            service.admissions,
        )

    processes = ApiProcesses(config.api_processes, spec_for, service.admissions)
    service.before_ready.append(processes.start_for)
    service.before_close.append(processes.stop)
    return api_socket


def api_socket_path(run_dir: str, position: int) -> str:
    """The private socket of API process `position` (1, 2, ...), for the UI workers' chats."""
    return os.path.join(run_dir, f"api-{position}.sock")


def listening_socket(host: str, port: int):
    """A listening TCP socket on host:port, to be shared by several processes."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=4096)


def main(argv: list[str] | None = None) -> int:
    signals = StopSignals(on_force=lambda n: print("[app] second signal: exiting now", flush=True))
    args = parse_args(argv)
    from launch.processes import isolate_engine_processes
    from launch.reaper import start_reaper, stop_reaper
    from server import HttpServers, build_apps

    args.model = choose_model(args.model)
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # vLLM's processes in a process group of their own: a terminal's Ctrl-C reaches this
    # process, which stops them in order (launch.processes says why).
    isolate_engine_processes(nice=config.engine_nice)
    reaper = start_reaper()  # ends the engine's processes should this one be killed outright
    run_dir = tempfile.mkdtemp(prefix="qwen3-demo-")
    socket_path = os.path.join(run_dir, "server.sock")
    if config.api_processes > 1:  # vLLM's metrics summed over the API processes
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(run_dir, "metrics")
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    service = EngineService(config, auto_restart=not args.no_auto_restart)
    public, private = build_apps(
        service, args.api_token, args.predict_max_tokens, openai=bool(args.api_port)
    )
    servers = HttpServers(service)
    try:
        api_socket = api_processes(args, config, service, run_dir)
    except OSError as err:
        print(f"error: the HTTP API cannot listen on port {args.api_port}: {err}", file=sys.stderr)
        stop_reaper(reaper)
        return 2
    if api_socket is not None:
        servers.add(public, sock=api_socket, headers=[("x-api-process", "0")])
    elif args.api_port:
        servers.add(public, host=args.host, port=args.api_port)
    servers.add(private, uds=socket_path)
    service.start()
    try:
        servers.start()
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        service.shutdown()
        stop_reaper(reaper)
        return 2
    ui = ui_group(args, socket_path, config)
    ui.start()
    if args.share and not args.auth:
        print(
            "WARNING: --share without --auth: anyone with the link can use this app and its "
            "GPU. Add --auth USER:PASS.",
            flush=True,
        )
    status, announced, warming = 0, False, None
    while not signals.wait(0.5):
        if not ui.check():
            print(f"error: the UI could not listen on port {args.port}", file=sys.stderr)
            status = 2
            break
        if not announced and ui.served():  # the link is printed once it serves the page
            announced = True
            print(f"* Running on local URL: http://{args.host}:{args.port}", flush=True)
        if announced and warming is None and service.status().ready:
            warming = warm_in_background(ui.worker_urls, args.auth)
    began = time.monotonic()
    print(f"[app] {signals.name if status == 0 else 'error'}: shutting down", flush=True)
    service.stop()  # replies in flight end with "the server is shutting down"
    ui.stop()
    servers.stop(timeout=3)
    service.shutdown()
    stop_reaper(reaper)
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"[app] stopped in {time.monotonic() - began:.1f} s", flush=True)
    sys.stderr.flush()
    # Everything is stopped: skip the interpreter's teardown (native extensions' leak reports,
    # joins of threads of a build that a stop cut short).
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
