"""The course evaluator's HTTP routes, from the shared engine, so its script works unchanged.

    GET  /          -> {"status": "batch"} once the engine is warm, else {"status": "initializing"}
    GET  /stats     -> engine phase and load (requests in flight, scheduler queues)
    POST /predict   {"prompt": "q"}        -> {"response": "a"}
                    {"prompt": ["q1", ...]} -> {"response": ["a1", ...]}  (same order, one batch)

Each prompt is wrapped in the course prompt (system prompt, question, generation prompt open)
and answered greedily; the reply's reasoning, if any, is left out. Bad requests get a 4xx with
`{"error": "...", "code": "bad_request"}`; an engine that cannot take the batch now gets 503
with Retry-After and its code (`server.errors`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from fastapi import APIRouter, Request

from engine import GREEDY, Engine, EngineService, GenerationParams, answer_text
from engine.types import ServiceError
from server.errors import BadRequest, TooLarge, error_response

MAX_BODY_BYTES = 8 * 2**20


def parse_prompts(body: bytes, max_batch: int) -> tuple[list[str], bool]:
    """Validate a /predict body; return (prompts, was_a_list) or raise BadRequest/TooLarge."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(f'body must be JSON like {{"prompt": "..."}}: {err}') from None
    except RecursionError:
        raise BadRequest("body is JSON nested too deeply") from None
    if not isinstance(data, dict) or "prompt" not in data:
        raise BadRequest('body must be a JSON object with a "prompt" field')
    prompt = data["prompt"]
    if isinstance(prompt, str):
        prompts, many = [prompt], False
    elif isinstance(prompt, list):
        prompts, many = prompt, True
        if not prompts:
            raise BadRequest('"prompt" is an empty list: send at least one question')
        if len(prompts) > max_batch:
            raise TooLarge(f"batch of {len(prompts)} prompts exceeds the limit of {max_batch}")
        wrong = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if wrong:
            raise BadRequest(
                f'"prompt" items must be strings; item {wrong[0]} is '
                f"{type(prompts[wrong[0]]).__name__}"
            )
    else:
        raise BadRequest(
            f'"prompt" must be a string or a list of strings, not {type(prompt).__name__}'
        )
    blank = [i for i, p in enumerate(prompts) if not p.strip()]
    if blank:
        raise BadRequest(f"prompt {blank[0]} is empty" if many else "prompt is empty")
    return prompts, many


async def answer_all(engine: Engine, questions: list[str], params: GenerationParams) -> list[str]:
    """One answer per question, in order; the whole list goes to the engine as one batch, with
    the engine's course prompt (see `engine.qwen3.prompt.default_thinking`)."""
    # Admitted before the prompts are built: a busy engine refuses at once.
    with engine.admit(len(questions)) as admitted:
        prompts = await asyncio.to_thread(lambda: [engine.chat_prompt(q) for q in questions])
        answers = [""] * len(prompts)
        batch = engine.generate_many(
            prompts, [params] * len(prompts), request_prefix="predict", admitted=admitted
        )
        async for done in batch:
            answers[done.index] = answer_text(done.text)
    return answers


def readiness(service: EngineService) -> dict:
    """`GET /`'s answer: "batch" once the engine is warm."""
    status = service.status()
    if status.ready and not service.closing:
        return {"status": "batch"}
    if service.closing:
        return {"status": "stopping", "detail": "the server is shutting down"}
    if status.phase == "failed":
        return {"status": "failed", "detail": status.message}
    return {
        "status": "initializing",
        "phase": status.phase,
        "detail": status.message,
        "progress": status.progress,
    }


def load(service: EngineService) -> dict:
    """`GET /stats`: the engine's phase and load, for operators and tests."""
    status = service.status()
    return {
        "phase": status.phase,
        "message": status.message,
        "restarts": service.restarts,
        **service.engine_load(),
    }


async def _body(request: Request) -> bytes:
    """The request's body, TooLarge past MAX_BODY_BYTES (told by its length where given)."""
    too_large = TooLarge(f"body larger than {MAX_BODY_BYTES // 2**20} MiB")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise too_large
    return body


def course_routes(service: EngineService, max_new_tokens: int = 256) -> APIRouter:
    """The course's routes over `service` (the bearer token is the guard's)."""
    router = APIRouter(tags=["course evaluator"])
    params = replace(GREEDY, max_new_tokens=max_new_tokens)

    @router.get("/")
    async def ready() -> dict:
        return readiness(service)

    @router.get("/stats")
    async def stats() -> dict:
        """Engine load for operators and tests: requests in flight, scheduler queues."""
        return load(service)

    @router.post("/predict")
    async def predict(request: Request):
        try:
            prompts, many = parse_prompts(await _body(request), service.config.max_batch)
            answers = await answer_all(service.engine, prompts, params)
        except ServiceError as err:
            return error_response(err)
        return {"response": answers if many else answers[0]}

    return router
