"""vLLM's own OpenAI-compatible server and Prometheus metrics, on the shared engine.

The routes are vLLM's (`/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/tokenize`,
`/health`, `/metrics`, ...), built by vLLM's `build_app` and `init_app_state` on the running
`AsyncLLM`: the `openai` package, Open WebUI, LangChain and `vllm bench serve` share the engine
with the chat tab, the benchmark and the course API. vLLM's `run_server` is not used: it owns
the engine and installs signal handlers.

    api = OpenAIApi(service, course_app, course_paths, token)   # before service.start()
    # serve `api` (an ASGI app) with uvicorn on the engine's loop: see api.ApiServer

In front of vLLM's app, on every route but the course's:
- `token`: a bearer token on everything except `/health`, `/ping`, `/version` and the API docs,
  including the routes that vLLM's own `--api-key` leaves open (`/invocations`, `/metrics`,
  `/inference/v1/generate`, ...);
- admission: a request that would take the engine past `max_queued_requests`, or that arrives
  while the engine is not ready (starting, restarting), gets 503 with Retry-After in vLLM's
  error shape (vLLM answers its own queue limit with 503 too);
- every new engine (start, restart) gets the app's state rebuilt on its AsyncLLM before it says
  ready (the first build takes seconds of the engine loop's time);
- chat completions carry Qwen3's reasoning (split off by vLLM's `qwen3` reasoning parser) as
  `reasoning`, vLLM's field, and also as `reasoning_content`, the older name many clients read.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.engine import Engine, EngineBusy, EngineUnavailable
from engine.service import EngineService

# Open without the token: they reveal nothing about the model, its load or its output.
PUBLIC_PATHS = frozenset(
    {"/health", "/ping", "/version", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
# POST routes that start no generation, so the admission limit does not apply.
NOT_GENERATING = frozenset(
    {
        "/tokenize",
        "/detokenize",
        "/ping",
        "/v1/messages/count_tokens",
        "/inference/v1/abort_requests",
    }
)
NOT_GENERATING_SUFFIXES = ("/render", "/derender", "/cancel")
# vLLM routes that resize the engine (elastic expert parallelism): never offered here.
DISABLED_PATHS = frozenset({"/scale_elastic_ep", "/is_scaling_elastic_ep"})
RETRY_AFTER_S = "5"
CHAT_PATH = "/v1/chat/completions"


def error_response(status: int, message: str, kind: str, **headers) -> JSONResponse:
    """An error in vLLM's (and OpenAI's) shape: {"error": {message, type, param, code}}."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def server_args(engine: Engine):
    """vLLM's own server arguments (`vllm serve`'s parser) for a started engine.

    The reasoning parser is read from the engine's config: `init_app_state` takes it from
    `args.structured_outputs_config`, which `--reasoning-parser` alone does not reach.
    """
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    llm = engine.async_llm
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(
        [
            "--model",
            str(engine.model.path),
            "--served-model-name",
            engine.model.served_name,
        ]
    )
    args.structured_outputs_config = llm.vllm_config.structured_outputs_config
    args.disable_log_stats = engine.config.disable_log_stats
    return args


class _ServerThatStaysUp:
    """vLLM's engine-error handler stops `app.state.server` when the engine dies (unless
    VLLM_KEEP_ALIVE_ON_ENGINE_DEATH); here the service restarts the engine instead."""

    should_exit = False


class OpenAIApi:
    """One ASGI app: the course routes always; vLLM's server once an engine is ready."""

    def __init__(
        self,
        service: EngineService,
        course: ASGIApp,
        course_paths: Iterable[str],
        token: str | None = None,
        course_router=None,
    ):
        self.service = service
        self.course = course
        self.course_paths = frozenset(course_paths)
        self.course_router = course_router  # listed in vLLM's /docs beside its own routes
        self.token = token or None
        self.app = None  # vLLM's FastAPI app, built on the first engine
        self.args = None
        self.engine: Engine | None = None  # the engine the app's state belongs to
        os.environ["VLLM_KEEP_ALIVE_ON_ENGINE_DEATH"] = "1"
        service.before_ready.append(self.attach)

    async def attach(self, engine: Engine) -> None:
        """Build vLLM's app (once) and its state on `engine`'s AsyncLLM (every start)."""
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app

        llm = engine.async_llm
        tasks = await llm.get_supported_tasks()
        if self.app is None:
            self.args = server_args(engine)
            self.app = build_app(self.args, tasks, llm.model_config)
            if self.course_router is not None:
                self.app.include_router(self.course_router)
            self.app.state.server = _ServerThatStaysUp()
        else:
            self.args.structured_outputs_config = llm.vllm_config.structured_outputs_config
        await init_app_state(llm, self.app.state, self.args, tasks)
        self.engine = engine

    # ---- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.course_paths:
            await self.course(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None and scope["path"] == CHAT_PATH:
            await self.app(scope, receive, with_reasoning_content(send))
        elif refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await refusal(scope, receive, send)

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        """The response that turns this request away, or None to let vLLM answer it."""
        path, method = scope["path"], scope.get("method", "GET")
        if path in DISABLED_PATHS:
            return error_response(404, "not offered by this server", "NotFoundError")
        if self.token and method != "OPTIONS" and path not in PUBLIC_PATHS:
            if not self._authorized(scope):
                return error_response(
                    401,
                    "missing or wrong bearer token",
                    "AuthenticationError",
                    **{"WWW-Authenticate": "Bearer"},
                )
        engine = self.service.engine
        try:
            if self.engine is not engine or engine.dead_reason():  # not (yet) this app's engine
                status = engine.status
                reason = engine.dead_reason() or f"{status.phase} ({status.message})"
                raise EngineUnavailable(f"engine not ready: {reason}")
            if method == "POST" and _generates(path):
                engine.admit(1)
            else:
                engine.require_ready()
        except (EngineBusy, EngineUnavailable) as err:  # vLLM's own queue limit: 503 too
            return error_response(
                503, str(err), "ServiceUnavailableError", **{"Retry-After": RETRY_AFTER_S}
            )
        return None

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value.decode("latin-1")
                return secrets.compare_digest(given.encode(), f"Bearer {self.token}".encode())
        return False


def _generates(path: str) -> bool:
    return path not in NOT_GENERATING and not path.endswith(NOT_GENERATING_SUFFIXES)


def _aliased(payload: dict, part: str) -> bool:
    """Copy each choice's `reasoning` to `reasoning_content`; whether any was copied."""
    copied = False
    for choice in payload.get("choices") or ():
        piece = choice.get(part) if isinstance(choice, dict) else None
        if isinstance(piece, dict) and piece.get("reasoning") is not None:
            piece["reasoning_content"] = piece["reasoning"]
            copied = True
    return copied


def _loads(text: bytes):
    try:
        return json.loads(text)
    except ValueError:  # not JSON after all: passed on as it is
        return None


def _dumps(payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def alias_json(body: bytes) -> bytes:
    """A chat completion's JSON body with `reasoning_content` beside `reasoning`."""
    if b'"reasoning":' not in body:
        return body
    payload = _loads(body)
    return _dumps(payload) if isinstance(payload, dict) and _aliased(payload, "message") else body


def alias_events(events: bytes) -> bytes:
    """Whole server-sent events (`data: {...}` blocks) with `reasoning_content` added."""
    out = []
    for event in events.split(b"\n\n"):
        if event.startswith(b"data: {") and b'"reasoning":' in event:
            payload = _loads(event[6:])
            if isinstance(payload, dict) and _aliased(payload, "delta"):
                event = b"data: " + _dumps(payload)
        out.append(event)
    return b"\n\n".join(out)


def with_reasoning_content(send: Send) -> Send:
    """Wrap an ASGI `send` so chat completions (whole or streamed) get `reasoning_content`."""
    held: dict = {"start": None, "mode": "pass", "buffer": b""}

    async def relay(message) -> None:
        if message["type"] == "http.response.start":
            kind = dict(message.get("headers", ())).get(b"content-type", b"")
            if kind.startswith(b"application/json"):
                held["mode"], held["start"] = "json", message
                return
            if kind.startswith(b"text/event-stream"):
                held["mode"] = "events"
            await send(message)
            return
        if message["type"] != "http.response.body" or held["mode"] == "pass":
            await send(message)
            return
        held["buffer"] += message.get("body", b"")
        more = message.get("more_body", False)
        if held["mode"] == "json":
            if not more:
                await _send_json(send, held["start"], alias_json(held["buffer"]))
            return
        # Only whole events are rewritten; a partial one waits for its next piece.
        cut = len(held["buffer"]) if not more else held["buffer"].rfind(b"\n\n") + 2
        if cut <= 1 and more:
            return
        ready, held["buffer"] = held["buffer"][:cut], held["buffer"][cut:]
        await send({"type": "http.response.body", "body": alias_events(ready), "more_body": more})

    return relay


async def _send_json(send: Send, start: dict, body: bytes) -> None:
    headers = [(k, v) for k, v in start.get("headers", ()) if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})
