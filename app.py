"""Qwen3-0.6B on one shared vLLM engine: a Gradio UI (chat, live benchmark) plus one HTTP API
port with the course evaluator's routes and vLLM's OpenAI-compatible server, in one process.

    python app.py                        # UI on :7860, HTTP API on :8000, model picked for you
    python app.py --share --auth me:pw   # public link, password-protected
    python app.py --help                 # every flag
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from engine import DEFAULT_MODEL, EngineService, add_config_arguments, config_from_args  # noqa: E402
from engine.models import HUBS, cached_model, can_download  # noqa: E402

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
        "--auth",
        default=os.environ.get("QWEN_DEMO_AUTH"),
        metavar="USER:PASS",
        help="protect the UI with a login (env QWEN_DEMO_AUTH)",
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from api import ApiServer, build_api
    from ui import CSS, build_ui

    args.model = choose_model(args.model)
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    service = EngineService(config, auto_restart=not args.no_auto_restart)
    api = None
    if args.api_port:  # built before the engine starts: it prepares its part on each engine
        http_api = build_api(service, args.predict_max_tokens, args.api_token)
        api = ApiServer(http_api, service, args.host, args.api_port)
    service.start()
    if api:
        try:
            api.start()
        except OSError as err:
            print(f"error: {err}", file=sys.stderr)
            service.shutdown()
            return 2
    if args.share and not args.auth:
        print(
            "WARNING: --share without --auth: anyone with the link can use this app and its "
            "GPU. Add --auth USER:PASS.",
            flush=True,
        )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    demo = build_ui(service, args.api_port or None)
    demo.queue(default_concurrency_limit=None, max_size=config.max_queued_requests)
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            auth=tuple(args.auth.split(":", 1)) if args.auth else None,
            max_file_size="4mb",
            allowed_paths=[],
            show_error=True,
            footer_links=["api", "gradio"],
            css=CSS,
        )
    except KeyboardInterrupt:
        pass
    finally:
        print("[app] shutting down", flush=True)
        demo.close()
        if api:
            api.stop()
        service.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
