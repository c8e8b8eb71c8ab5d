"""The course evaluator's HTTP API, served from the shared engine beside the UI.

    GET  /          -> {"status": "batch"} once the engine is warm, else {"status": "initializing"}
    GET  /stats     -> engine phase and load (requests in flight, scheduler queues)
    POST /predict   {"prompt": "q"}        -> {"response": "a"}
                    {"prompt": ["q1", ...]} -> {"response": ["a1", ...]}  (same order, one batch)

Each prompt is wrapped in the chat template (system prompt, question, generation prompt open)
and answered greedily; the reply's reasoning, if any, is left out. Bad requests get a 4xx with
a message; an engine that is not ready gets 503. An optional bearer token guards /predict.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import replace

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engine import GREEDY, EngineBusy, EngineService, EngineUnavailable, RequestError

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


def build_api(
    service: EngineService, max_new_tokens: int = 256, token: str | None = None
) -> FastAPI:
    """The FastAPI app with the course's two routes over `service`."""
    app = FastAPI(title="Qwen3 course evaluation API", docs_url="/docs", redoc_url=None)
    params = replace(GREEDY, max_new_tokens=max_new_tokens)

    @app.get("/")
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

    @app.get("/stats")
    async def stats() -> dict:
        """Engine load for operators and tests: requests in flight, scheduler queues."""
        status = service.status()
        return {
            "phase": status.phase,
            "message": status.message,
            "restarts": service.restarts,
            **service.engine_load(),
        }

    @app.post("/predict")
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

    return app


class ApiServer:
    """Runs the API with uvicorn on its own thread (its own event loop)."""

    def __init__(self, app: FastAPI, host: str, port: int):
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
