"""The HTTP layer's two ASGI apps, each with the guard in front:

- the public API (`--api-port`, default 8000): the course routes and vLLM's OpenAI-compatible
  server, behind the optional bearer token;
- the UI process's private API, on a Unix socket only this user can open: the `/internal/...`
  routes (`server.internal`).

    public, private = build_apps(service, token, predict_max_tokens)   # before service.start()
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import EngineService
from engine.types import EngineUnavailable, ServiceError
from server.course import course_routes
from server.errors import error_response
from server.guard import Guard, vllm_send
from server.internal import internal_routes
from server.openai import OpenAIApp


class GuardedApp:
    """Routes requests to the course app, the UI's routes or vLLM's app, after the guard."""

    def __init__(
        self,
        guard: Guard,
        own: ASGIApp,
        own_paths: frozenset[str],
        openai: OpenAIApp | None,
        check_token: bool,
    ):
        self.guard, self.own, self.own_paths = guard, own, own_paths
        self.openai, self.check_token = openai, check_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.own(scope, receive, send)
            return
        path = scope["path"]
        mine = path in self.own_paths or self.openai is None
        try:
            room = self.guard.let_in(scope, admit=not mine, check_token=self.check_token)
        except ServiceError as err:
            await self.refuse(err, not mine, scope, receive, send)
            return
        try:
            if mine:
                await self.own(scope, receive, send)
            elif self.openai.app is None:
                refusal = EngineUnavailable("the OpenAI API is not up yet")
                await self.refuse(refusal, True, scope, receive, send)
            else:
                # With several API processes, vLLM's own count of the request is this
                # process's alone: the room is held until the response ends, in the shared
                # count, instead of being let go at the first bytes.
                early = room if self.guard.service.admissions is None else None
                await self.openai(scope, receive, vllm_send(send, early))
        finally:
            if room is not None:
                room.release()

    @staticmethod
    async def refuse(err: ServiceError, openai_shape: bool, scope, receive, send) -> None:
        """Turn the request away: an error response, or a policy close for a websocket."""
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await error_response(err, openai_shape)(scope, receive, send)


def build_apps(
    service: EngineService, token: str | None, predict_max_tokens: int, openai: bool = True
) -> tuple[GuardedApp, GuardedApp]:
    """(public app, private app) over `service`; build them before `service.start()`, since
    vLLM's part is built on each engine as it comes up."""
    course = course_routes(service, predict_max_tokens)
    vllm_app = OpenAIApp(course_router=course) if openai else None
    if vllm_app is not None:
        service.before_ready.append(vllm_app.attach)
    guard = Guard(service, token, is_ready=vllm_app.serves if vllm_app else None)
    course_app = FastAPI(openapi_url=None)  # vLLM's /docs lists the course routes too
    course_app.include_router(course)
    public = GuardedApp(
        guard, course_app, frozenset(r.path for r in course.routes), vllm_app, check_token=True
    )
    internal = internal_routes(service)
    private_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    private_app.include_router(internal)
    private_app.include_router(course)
    paths = frozenset(r.path for r in [*internal.routes, *course.routes])
    private = GuardedApp(Guard(service, None), private_app, paths, None, check_token=False)
    return public, private
