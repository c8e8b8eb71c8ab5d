"""The UI process: Gradio in front of the server's private socket (app.py starts it).

    python -m ui --socket /tmp/qwen3-demo-x/server.sock --port 41001 --operator everyone
    python -m ui --socket ... --port 41002 --operator nobody --share-tunnel 7860   # + the link

A worker listens on loopback behind the front (`launch.ui_front`), which holds the public port;
the first worker of a shared app opens the public link to the front's port.

Logins and the operator key come from the environment (`QWEN_DEMO_AUTH`,
`QWEN_DEMO_OPERATOR_KEY`), never the command line, which other users can read. On SIGINT or
SIGTERM the replies in flight end with "the server is shutting down" and the page server
closes; a second Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio tries `import matplotlib` twice around every event it processes (each streamed redraw
# too); where it is not installed, each try searches the whole import path again. Marking it
# absent makes those tries fail at once.
if importlib.util.find_spec("matplotlib") is None:
    sys.modules["matplotlib"] = None

DRAIN_SECONDS = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ui", description=__doc__)
    parser.add_argument("--socket", required=True, help="the server's private socket")
    parser.add_argument(
        "--chat-socket",
        help="the private socket of the API process this worker sends its chats to (with "
        "several API processes; default: --socket)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--operator",
        required=True,
        choices=("everyone", "key", "nobody"),
        help="who may restart the engine and run benchmarks, as the app decided it "
        "(launch.exposure): everyone, whoever enters the key, or nobody",
    )
    parser.add_argument(
        "--share-tunnel",
        type=int,
        metavar="PORT",
        help="open the public share link to this port (the front's)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="say nothing of where it listens (behind the front)"
    )
    parser.add_argument("--api-port", type=int, default=0, help="for the status line")
    parser.add_argument("--max-new-tokens-cap", type=int, default=2048)
    parser.add_argument("--max-queue", type=int, default=4096, help="Gradio's queue size")
    parser.add_argument(
        "--max-events",
        type=int,
        default=1024,
        help="events Gradio runs at once (its max_threads; Gradio's own default, 40, would make "
        "the 41st chat wait for the first to finish)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(number, frame) -> None:
        # A second Ctrl-C ends the process at once; a SIGTERM during the stop is the app
        # asking for the stop that is already under way.
        if stop.is_set() and number == signal.SIGINT:
            os._exit(128 + number)
        stop.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, on_signal)

    from ui import UiSettings, build_ui
    from ui.backend import Backend
    from ui.chat import UpdatePacer
    from ui.operator import operator_policy
    from ui.status import CSS

    auth = os.environ.get("QWEN_DEMO_AUTH")
    key = os.environ.get("QWEN_DEMO_OPERATOR_KEY")
    try:
        policy = operator_policy(args.operator, key)
    except ValueError as err:
        print(f"[ui] error: {err}", file=sys.stderr, flush=True)
        return 2
    backend = Backend(args.socket, args.chat_socket)
    backend.start_polling()
    pacer = UpdatePacer()
    settings = UiSettings(policy, args.api_port or None, args.max_new_tokens_cap)
    demo = build_ui(backend, settings, pacer)
    demo.queue(default_concurrency_limit=None, max_size=args.max_queue)
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=False,
            auth=tuple(auth.split(":", 1)) if auth else None,
            max_file_size="4mb",
            allowed_paths=[],
            show_error=True,
            footer_links=["api", "gradio"],
            css=CSS,
            prevent_thread_lock=True,
            quiet=args.quiet,
            max_threads=max(40, args.max_events),
        )
    except OSError as err:
        print(f"[ui] error: {err}", file=sys.stderr, flush=True)
        return 2
    if args.share_tunnel:
        open_share_link(demo, args.share_tunnel)
    while not stop.wait(0.5):
        pass
    backend.stopping.set()  # replies in flight end with the shutdown message at their next chunk
    deadline = time.monotonic() + DRAIN_SECONDS
    while backend.active and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the last messages reach the browsers
    demo.close(verbose=False)
    return 0


def open_share_link(demo, port: int) -> str | None:
    """Gradio's public link to `port` on this machine (the front's, which serves every worker);
    None, saying why, where it cannot be opened (offline, say): the app serves locally."""
    from gradio import networking

    try:
        url = networking.setup_tunnel(
            local_host="127.0.0.1",
            local_port=port,
            share_token=demo.share_token,
            share_server_address=None,
            share_server_tls_certificate=None,
        )
    except Exception as err:  # noqa: BLE001  (any failure: no link, the app serves on)
        print(f"[ui] could not create a share link ({err}); serving locally", flush=True)
        return None
    url = "https://" + url.split("://", 1)[-1]
    print(f"* Running on public URL: {url}", flush=True)
    return url


if __name__ == "__main__":
    sys.exit(main())
