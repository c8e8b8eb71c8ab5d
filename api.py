"""The HTTP API on one port, from the shared engine beside the UI: the course evaluator's
routes and vLLM's OpenAI-compatible server (`engine.openai_api`).

    GET  /          -> {"status": "batch"} once the engine is warm, else {"status": "initializing"}
    GET  /stats     -> engine phase and load (requests in flight, scheduler queues)
    POST /predict   {"prompt": "q"}        -> {"response": "a"}
                    {"prompt": ["q1", ...]} -> {"response": ["a1", ...]}  (same order, one batch)
    /v1/models, /v1/chat/completions, /v1/completions, /tokenize, /health, /metrics, ...: vLLM's

Each prompt is wrapped in the chat template (system prompt, question, generation prompt open)
and answered greedily; the reply's reasoning, if any, is left out. Bad requests get a 4xx with
a message; an engine that is not ready gets 503. An optional bearer token guards /predict and
every OpenAI route that can generate or reveal anything.

The server runs on the engine's event loop: vLLM's streaming responses then reach the client
token by token (served from another loop, chunks arrived in bunches about every 100 ms).
"""

from __future__ import annotations

import json
import secrets
import time
from contextlib import suppress
from dataclasses import replace

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from engine import GREEDY, EngineBusy, EngineService, EngineUnavailable, RequestError
from engine.openai_api import OpenAIApi

MAX_BODY_BYTES = 8 * 2**20


def _error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def parse_prompts(body: bytes, max_batch: int) -> tuple[list[str], bool]:
    """Validate a /predict body; return (prompts, was_a_list) or raise ValueError/OverflowError."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'body must be JSON like {{"prompt": "..."}}: {err}') from None
    if not isinstance(data, dict) or "prompt" not in data:
        raise ValueError('body must be a JSON object with a "prompt" field')
    prompt = data["prompt"]
    if isinstance(prompt, str):
        prompts, many = [prompt], False
    elif isinstance(prompt, list):
        prompts, many = prompt, True
        if not prompts:
            raise ValueError('"prompt" is an empty list: send at least one question')
        if len(prompts) > max_batch:
            raise OverflowError(f"batch of {len(prompts)} prompts exceeds the limit of {max_batch}")
        wrong = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if wrong:
            raise ValueError(
                f'"prompt" items must be strings; item {wrong[0]} is '
                f"{type(prompts[wrong[0]]).__name__}"
            )
    else:
        raise ValueError(
            f'"prompt" must be a string or a list of strings, not {type(prompt).__name__}'
        )
    blank = [i for i, p in enumerate(prompts) if not p.strip()]
    if blank:
        raise ValueError(f"prompt {blank[0]} is empty" if many else "prompt is empty")
    return prompts, many


def course_routes(
    service: EngineService, max_new_tokens: int = 256, token: str | None = None
) -> APIRouter:
    """The course's routes over `service`."""
    router = APIRouter(tags=["course evaluator"])
    params = replace(GREEDY, max_new_tokens=max_new_tokens)

    @router.get("/")
    async def readiness() -> dict:
        status = service.status()
        if status.ready:
            return {"status": "batch"}
        if status.phase == "failed":
            return {"status": "failed", "detail": status.message}
        return {
            "status": "initializing",
            "phase": status.phase,
            "detail": status.message,
            "progress": status.progress,
        }

    @router.get("/stats")
    async def stats() -> dict:
        """Engine load for operators and tests: requests in flight, scheduler queues."""
        status = service.status()
        return {
            "phase": status.phase,
            "message": status.message,
            "restarts": service.restarts,
            **service.engine_load(),
        }

    @router.post("/predict")
    async def predict(request: Request):
        if token and not secrets.compare_digest(
            request.headers.get("authorization", ""), f"Bearer {token}"
        ):
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _error(413, f"body larger than {MAX_BODY_BYTES // 2**20} MiB")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"body larger than {MAX_BODY_BYTES // 2**20} MiB")
        try:
            prompts, many = parse_prompts(body, service.config.max_batch)
        except OverflowError as err:
            return _error(413, str(err))
        except ValueError as err:
            return _error(422, str(err))
        try:
            answers = await service.answer_all(prompts, params)
        except RequestError as err:
            return _error(422, str(err))
        except (EngineUnavailable, EngineBusy) as err:
            return _error(503, str(err), **{"Retry-After": "5"})
        return {"response": answers if many else answers[0]}

    return router


def build_api(
    service: EngineService, max_new_tokens: int = 256, token: str | None = None
) -> OpenAIApi:
    """The whole HTTP API over `service`: the course routes and vLLM's OpenAI server.

    Build it before `service.start()`: it builds its vLLM part as each engine comes up.
    """
    routes = course_routes(service, max_new_tokens, token)
    course = FastAPI(openapi_url=None)  # vLLM's /docs lists the course routes too
    course.include_router(routes)
    paths = [route.path for route in routes.routes]
    return OpenAIApi(service, course, paths, token, course_router=routes)


class ApiServer:
    """Runs the API with uvicorn as a task on the engine's event loop."""

    def __init__(self, app, service: EngineService, host: str, port: int):
        self.service = service
        self.port = port
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5
            )
        )
        self._task = None

    async def _serve(self) -> None:
        try:
            await self.server.serve()
        except SystemExit:  # uvicorn's answer to a port in use; it must not stop the loop
            raise OSError(f"the HTTP API could not listen on port {self.port}") from None

    def start(self, timeout: float = 30) -> None:
        """Start serving (the service must be started); raise OSError if it cannot listen."""
        self._task = self.service.submit(self._serve())
        deadline = time.monotonic() + timeout
        while not self.server.started and not self._task.done():
            if time.monotonic() > deadline:
                raise OSError(f"the HTTP API did not start listening on port {self.port}")
            time.sleep(0.05)
        if self._task.done():
            self._task.result()

    def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with suppress(Exception):
                self._task.result(timeout=10)
