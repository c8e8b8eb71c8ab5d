"""The one guard in front of every HTTP route: the bearer token, readiness and admission, and
the shape of an error.

Two error shapes, one per family of routes: the course API's `{"error": "message"}` (what its
evaluator and the UI read) and vLLM's `{"error": {"message", "type", "param", "code"}}` on the
OpenAI-compatible routes. A request the engine cannot take now gets 503 with `Retry-After`
in either shape: starting, restarting, shutting down, or past the admission limit (vLLM answers
its own queue limit with 503 too).
"""

from __future__ import annotations

import secrets

from starlette.responses import JSONResponse

from engine import EngineBusy, EngineService, EngineUnavailable, ServerStopping

RETRY_AFTER_S = "5"
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


def error_response(status: int, message: str, openai_shape: bool, **headers) -> JSONResponse:
    """An error in the shape of its route family."""
    if openai_shape:
        kind = {
            401: "AuthenticationError",
            404: "NotFoundError",
            413: "BadRequestError",
            422: "BadRequestError",
            503: "ServiceUnavailableError",
        }.get(status, "BadRequestError")
        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    else:
        body = {"error": message}
    return JSONResponse(body, status_code=status, headers=headers or None)


def unavailable(err: Exception, openai_shape: bool) -> JSONResponse:
    """503 with Retry-After for an engine that cannot take the request now."""
    return error_response(503, str(err), openai_shape, **{"Retry-After": RETRY_AFTER_S})


class Guard:
    """Decides, before any route runs, whether a request is let in."""

    def __init__(self, service: EngineService, token: str | None, is_ready=None):
        self.service = service
        self.token = token or None
        # Whether the OpenAI routes' state belongs to the current engine (server.openai).
        self.is_ready = is_ready or (lambda engine: True)

    def refusal(self, scope, openai_shape: bool, check_token: bool = True) -> JSONResponse | None:
        """The response that turns this request away, or None to let it through."""
        path, method = scope["path"], scope.get("method", "GET")
        if path in DISABLED_PATHS:
            return error_response(404, "not offered by this server", openai_shape)
        if check_token and self.token and method != "OPTIONS" and path not in PUBLIC_PATHS:
            if not self.authorized(scope):
                return error_response(
                    401,
                    "missing or wrong bearer token",
                    openai_shape,
                    **{"WWW-Authenticate": "Bearer"},
                )
        if path in ALWAYS_PATHS or path == "/predict":
            return None  # /predict checks its batch's size itself, in the course's shape
        engine = self.service.engine
        try:
            if self.service.closing:
                raise ServerStopping()
            if not self.is_ready(engine) or engine.dead_reason():
                status = engine.status
                reason = engine.dead_reason() or f"{status.phase} ({status.message})"
                raise EngineUnavailable(f"engine not ready: {reason}")
            if method == "POST" and _generates(path):
                engine.admit(1)
            else:
                engine.admit(0)
        except (EngineBusy, EngineUnavailable) as err:
            return unavailable(err, openai_shape)
        return None

    def authorized(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                return secrets.compare_digest(value, f"Bearer {self.token}".encode())
        return False


def _generates(path: str) -> bool:
    return path not in NOT_GENERATING and not path.endswith(NOT_GENERATING_SUFFIXES)
