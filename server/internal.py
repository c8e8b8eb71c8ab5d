"""The routes the UI process uses, served only on the server's private Unix socket.

    GET  /internal/status      the engine's status, restarts and load
    POST /internal/chat        {"messages", "thinking", "params"} -> NDJSON reply events
    POST /internal/benchmark   {"spec", "pairs", "owner"} -> NDJSON progress events, then the
                               result (or `{"cancelled": true}`)
    POST /internal/benchmark/cancel  {"owner"} -> {"run": "cancelled" | "none" | "other"}
    POST /internal/restart     start a restart (or join the one under way)

A chat streams one JSON line per engine output: `{"reasoning": "...", "answer": "...",
"tokens": n}` deltas, then `{"done": true, "tokens", "ttft_s", "elapsed_s", "finish_reason",
"dropped_turns"}`; an error after the first line is a line `{"error": "...", "status": 503}`.
The prompt is cut to the context by dropping the oldest turns (`engine.chat.fit_to_context`),
rendered and tokenized off the engine loop. A benchmark's progress lines carry only the
samples finished since the line before. One benchmark runs at a time, whichever UI worker asks:
the server keeps who started it (`owner`, the visitor's Gradio session), so that only they can
cancel it from any worker.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from dataclasses import asdict

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from bench import BenchmarkError, BenchmarkResult, BenchmarkSpec, run_benchmark
from engine import (
    EngineBusy,
    EngineService,
    EngineUnavailable,
    GenerationParams,
    RequestError,
)
from engine.chat import ThinkSplitter
from eval_data import QAPair
from server.course import load
from server.guard import error_response, unavailable

NDJSON = "application/x-ndjson"
ROLES = ("system", "user", "assistant")


class ClosingStream(StreamingResponse):
    """A streamed response that closes its generator however the response ends: Starlette
    leaves it suspended when the client goes away between two lines, and the requests it
    holds in the engine would run on until garbage collection."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


def _line(payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _failure(err: Exception) -> dict:
    status = 422 if isinstance(err, RequestError) else 503
    return {"error": str(err), "status": status}


def _quiet(future) -> None:
    if not future.cancelled():
        future.exception()


def parse_chat(data) -> tuple[list[dict], bool, GenerationParams]:
    """(messages, thinking, params) of a chat request; ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    for m in messages:
        if (
            not isinstance(m, dict)
            or m.get("role") not in ROLES
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError('each message needs a "role" (system, user, assistant) and text')
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise ValueError("the last message must be the user's, and not empty")
    raw = data.get("params") or {}
    try:
        params = GenerationParams(
            max_new_tokens=int(raw.get("max_new_tokens", 512)),
            temperature=float(raw.get("temperature", 0.7)),
            top_p=float(raw.get("top_p", 0.8)),
            top_k=int(raw.get("top_k", 20)),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad sampling settings: {err}") from None
    params.validate()
    return messages, bool(data.get("thinking", True)), params


async def chat_events(engine, messages, thinking: bool, params: GenerationParams):
    """A chat reply as events (see the module's docstring); raises before the first one if the
    request cannot start."""
    engine.admit()
    reply = min(params.max_new_tokens, engine.config.max_new_tokens_cap)
    fitted = await asyncio.to_thread(engine.fit_conversation, messages, thinking, reply)
    splitter, chunk = ThinkSplitter(), None
    stream = engine.stream(fitted.ids, params)
    first = await anext(stream)  # errors here become an HTTP error, not a stream line

    async def events():
        nonlocal chunk
        try:
            chunk = first
            yield _delta(splitter, chunk)
            async for chunk in stream:
                yield _delta(splitter, chunk)
            reasoning, answer = splitter.finish()
            if reasoning or answer:
                yield _line(
                    {"reasoning": reasoning, "answer": answer, "tokens": chunk.output_tokens}
                )
            yield _line(
                {
                    "done": True,
                    "tokens": chunk.output_tokens,
                    "ttft_s": chunk.ttft_s,
                    "elapsed_s": chunk.elapsed_s,
                    "finish_reason": chunk.finish_reason,
                    "dropped_turns": fitted.dropped_turns,
                }
            )
        except (EngineUnavailable, EngineBusy, RequestError) as err:
            yield _line(_failure(err))
        finally:
            await stream.aclose()

    return events()


def _delta(splitter: ThinkSplitter, chunk) -> bytes:
    reasoning, answer = splitter.feed(chunk.text)
    return _line({"reasoning": reasoning, "answer": answer, "tokens": chunk.output_tokens})


def _owner(data) -> str | None:
    """Who a benchmark request or cancel speaks for: the visitor's session, if any."""
    owner = data.get("owner") if isinstance(data, dict) else None
    if owner is not None and not isinstance(owner, str):
        raise ValueError('"owner" must be a string')
    return owner


def parse_benchmark(data) -> tuple[list[QAPair], BenchmarkSpec]:
    """(questions, spec) of a benchmark request; ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    pairs = data.get("pairs")
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise ValueError('"pairs" must be a list of [question, reference] pairs')
    fields = {
        f: v for f, v in (data.get("spec") or {}).items() if f in BenchmarkSpec.__dataclass_fields__
    }
    spec = BenchmarkSpec(**fields)
    questions = [QAPair(i + 1, q, r) for i, (q, r) in enumerate(pairs)]
    spec.validate(len(questions))
    return questions, spec


async def benchmark_events(engine, pairs: list[QAPair], spec: BenchmarkSpec):
    """A run's progress lines (new samples only), then its result line."""
    sent = 0
    async with aclosing(run_benchmark(engine, pairs, spec)) as events:  # closing aborts the run
        async for event in events:
            if isinstance(event, BenchmarkResult):
                yield _line({"result": event.to_dict()})
                return
            progress = asdict(event)
            samples = progress.pop("samples")
            yield _line({"progress": progress, "new_samples": samples[sent:]})
            sent = len(samples)


def internal_routes(service: EngineService) -> APIRouter:
    """The UI process's routes over `service`."""
    router = APIRouter(prefix="/internal", include_in_schema=False)
    one_run = asyncio.Lock()
    current: dict = {"owner": None, "stop": None}  # the run under way: who started it, its stop

    @router.get("/status")
    async def status() -> dict:
        return {"status": service.status().to_dict(), "closing": service.closing, **load(service)}

    @router.post("/restart")
    async def restart():
        if service.closing:
            return error_response(503, "the server is shutting down", False)
        service.restart().add_done_callback(_quiet)  # the outcome shows in the status
        return {"restarting": True, "restarts": service.restarts}

    @router.post("/chat")
    async def chat(request: Request):
        try:
            messages, thinking, params = parse_chat(json.loads(await request.body()))
            events = await chat_events(service.engine, messages, thinking, params)
        except RequestError as err:
            return error_response(422, str(err), False)
        except ValueError as err:  # also bad JSON
            return error_response(422, str(err), False)
        except (EngineUnavailable, EngineBusy) as err:
            return unavailable(err, False)
        except StopAsyncIteration:
            return error_response(503, "the engine ended the reply before its first token", False)
        return ClosingStream(events, media_type=NDJSON)

    @router.post("/benchmark")
    async def benchmark(request: Request):
        try:
            data = json.loads(await request.body())
            pairs, spec = parse_benchmark(data)
            owner, stop = _owner(data), asyncio.Event()
        except (BenchmarkError, ValueError, TypeError) as err:
            return error_response(422, str(err), False)
        if one_run.locked():
            return error_response(
                409, "A benchmark is already running; wait for it or cancel it.", False
            )

        async def events():
            async with one_run:
                current.update(owner=owner, stop=stop)
                try:
                    lines = benchmark_events(service.engine, pairs, spec)
                    async with aclosing(lines) as run:  # leaving early aborts the run
                        async for line in run:  # progress comes every 0.25 s
                            if stop.is_set():
                                yield _line({"cancelled": True})
                                return
                            yield line
                except (EngineUnavailable, EngineBusy, RequestError, BenchmarkError) as err:
                    yield _line(_failure(err))
                finally:
                    current.update(owner=None, stop=None)

        return ClosingStream(events(), media_type=NDJSON)

    @router.post("/benchmark/cancel")
    async def cancel(request: Request):
        try:
            owner = _owner(json.loads(await request.body()))
        except ValueError as err:
            return error_response(422, str(err), False)
        if current["stop"] is None:
            return {"run": "none"}
        if owner is None or owner != current["owner"]:
            return {"run": "other"}
        current["stop"].set()
        return {"run": "cancelled"}

    return router
