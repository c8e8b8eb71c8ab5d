"""The one guard in front of every HTTP route: the bearer token, readiness, and admission for
vLLM's routes (the course's and the UI's routes admit their requests themselves, knowing how
many each brings).

A request the guard turns away gets the error contract of `server.errors`: a code in either
shape, and 503 with `Retry-After` when the engine cannot take it now (starting, restarting,
shutting down, or past the admission limit; vLLM answers its own queue limit with 503 too).
"""

from __future__ import annotations

import secrets

from starlette.types import Send

from engine import EngineService
from engine.runtime.engine import Admission
from engine.types import EngineUnavailable, ServerStopping
from server.errors import NotOffered, Unauthorized, with_retry_after

# Open without the token where one is set. What they tell anyone: `/health` and `/ping`,
# whether the engine is alive; `/version`, vLLM's version; the docs and `/openapi.json`, the
# routes; the course's `GET /`, the engine's phase, with its start-up message and progress
# until it is ready (`server.course.readiness`). None tells the load or anything of a request:
# `/stats` (requests in flight, queues) and `/metrics` need the token. Without a token every
# route is open, as `vllm serve` leaves `/metrics`.
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/ping",
        "/version",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/",
    }
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
# No readiness or admission check, so they answer whatever the engine is doing: the course's
# readiness probe `/` and load figures `/stats` (behind the token where one is set), and the
# UI workers' status and restart on the private socket.
ALWAYS_PATHS = frozenset({"/", "/stats", "/internal/status", "/internal/restart"})


class Guard:
    """Decides, before any route runs, whether a request is let in."""

    def __init__(self, service: EngineService, token: str | None, is_ready=None):
        self.service = service
        self.token = token or None
        # Whether the OpenAI routes' state belongs to the current engine (server.openai).
        self.is_ready = is_ready or (lambda engine: True)

    def let_in(self, scope, admit: bool, check_token: bool = True) -> Admission | None:
        """The room the request holds (for a generating request to vLLM's routes when `admit`;
        see `vllm_send`), or None; raises the ServiceError that turns it away."""
        path, method = scope["path"], scope.get("method", "GET")
        if path in DISABLED_PATHS:
            raise NotOffered()
        if check_token and self.token and method != "OPTIONS" and path not in PUBLIC_PATHS:
            if not self.authorized(scope):
                raise Unauthorized()
        if path in ALWAYS_PATHS or path == "/predict":
            return None  # /predict admits its batch itself
        engine = self.service.engine
        if self.service.closing:
            raise ServerStopping()
        if not self.is_ready(engine) or engine.dead_reason():
            status = engine.status
            reason = engine.dead_reason() or f"{status.phase} ({status.message})"
            raise EngineUnavailable(f"engine not ready: {reason}")
        return engine.admit(1 if admit and method == "POST" and _generates(path) else 0)

    def authorized(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                return secrets.compare_digest(value, f"Bearer {self.token}".encode())
        return False


def vllm_send(send: Send, room: Admission | None) -> Send:
    """Wrap an ASGI `send` for vLLM's routes, in one step per message (a stream sends one per
    event): a 503 gets Retry-After (`server.errors.with_retry_after`), and the guard's room is
    let go with the response's first body bytes, when vLLM counts the request itself (a
    stream's first chunk follows its first output; a whole answer, its end), so a stream's end
    need not be waited for."""

    async def relay(message) -> None:
        if message["type"] == "http.response.body":
            if room is not None:
                room.release()
        elif message["type"] == "http.response.start":
            message = with_retry_after(message)
        await send(message)

    return relay


def _generates(path: str) -> bool:
    return path not in NOT_GENERATING and not path.endswith(NOT_GENERATING_SUFFIXES)
