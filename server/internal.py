"""The routes the UI process uses, served only on the server's private Unix socket.

    GET  /internal/status      the engine's status, restarts and load
    POST /internal/chat        {"messages", "thinking", "params"} -> NDJSON reply events
    POST /internal/benchmark   {"spec", "pairs", "owner"} -> NDJSON progress events, then the
                               result (or `{"cancelled": true}`)
    POST /internal/benchmark/cancel  {"owner"} -> {"run": "cancelled" | "none" | "other"}
    POST /internal/restart     start a restart (or join the one under way)

The messages are `protocol`'s: a chat streams ChatDelta lines, then ChatDone; an error after the
first line is a StreamError line with its code (`server.errors`). The prompt is cut to the
context by dropping the oldest turns (`engine.qwen3.prompt.fit_to_context`), rendered and
tokenized off the engine loop. A benchmark's progress lines carry only the samples finished
since the line before. One benchmark runs at a time, whichever UI worker asks: the run is
claimed in the handler, before its response starts, so that of two requests arriving together
the second gets 409 `benchmark_running`; the server keeps who started it (`owner`, the visitor's
Gradio session), so that only they can cancel it from any worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import asdict

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from bench import BenchmarkResult, BenchmarkSpec, run_benchmark
from engine import EngineService, EngineUnavailable
from engine.qwen3.reasoning import ThinkSplitter
from engine.runtime.engine import Admission
from engine.types import ServerStopping, ServiceError
from eval_data import QAPair
from protocol import (
    BenchmarkDone,
    BenchmarkProgress,
    Cancelled,
    ChatDelta,
    ChatDone,
    ChatRequest,
    encode,
)
from server.course import load
from server.errors import BadRequest, BenchmarkRunning, error_line, error_response

NDJSON = "application/x-ndjson"


class ClosingStream(StreamingResponse):
    """A streamed response that closes its generator, and runs `end`, however the response
    ends: Starlette leaves the generator suspended when the client goes away between two lines
    (the requests it holds in the engine would run on until garbage collection), and never
    starts it when the client is gone before the first."""

    def __init__(self, content, end: Callable[[], Awaitable[None]]):
        super().__init__(content, media_type=NDJSON)
        self.end = end

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()
            finally:
                await self.end()


def _quiet(future) -> None:
    if not future.cancelled():
        future.exception()


async def chat_events(engine, request: ChatRequest):
    """A chat reply: (its event lines, see the module's docstring; what ends it however the
    response ends). Raises before the first line if the request cannot start."""
    admitted = engine.admit()  # before tokenizing: a busy engine refuses at once
    stream = None

    async def end() -> None:
        admitted.release()  # first: a cancelled response may not get past the next await
        if stream is not None:
            await stream.aclose()  # aborts the request in vLLM if it is still running

    try:
        fitted = await asyncio.to_thread(
            engine.fit_conversation, request.messages, request.thinking, request.params
        )
        stream = engine.stream(fitted.ids, request.params, admitted=admitted)
        first = await anext(stream)  # errors here become an HTTP error, not a stream line
    except BaseException:
        await end()
        raise
    return _reply_lines(stream, first, fitted.dropped_turns), end


async def _reply_lines(stream, chunk, dropped_turns: int):
    """A streamed reply's lines from its first chunk on; an error becomes the last line."""
    splitter = ThinkSplitter()
    try:
        yield _delta(splitter, chunk)
        async for chunk in stream:
            yield _delta(splitter, chunk)
        reasoning, answer = splitter.finish()
        if reasoning or answer:
            yield encode(ChatDelta(reasoning, answer, chunk.output_tokens))
        done = ChatDone(
            chunk.output_tokens, chunk.ttft_s, chunk.elapsed_s, chunk.finish_reason, dropped_turns
        )
        yield encode(done)
    except ServiceError as err:
        yield encode(error_line(err))
    finally:
        await stream.aclose()


def _delta(splitter: ThinkSplitter, chunk) -> bytes:
    reasoning, answer = splitter.feed(chunk.text)
    return encode(ChatDelta(reasoning, answer, chunk.output_tokens))


def _owner(data) -> str | None:
    """Who a benchmark request or cancel speaks for: the visitor's session, if any."""
    owner = data.get("owner") if isinstance(data, dict) else None
    if owner is not None and not isinstance(owner, str):
        raise BadRequest('"owner" must be a string')
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


async def benchmark_events(engine, pairs: list[QAPair], spec: BenchmarkSpec, admitted=None):
    """A run's progress lines (new samples only), then its result line."""
    sent = 0
    run = run_benchmark(engine, pairs, spec, admitted=admitted)
    async with aclosing(run) as events:  # closing aborts the run
        async for event in events:
            if isinstance(event, BenchmarkResult):
                yield encode(BenchmarkDone(event.to_dict()))
                return
            progress = asdict(event)
            samples = progress.pop("samples")
            yield encode(BenchmarkProgress(progress, samples[sent:]))
            sent = len(samples)


class BenchmarkClaim:
    """The one benchmark under way over every UI worker (they share this process): who started
    it and its stop signal. Taken in the request's handler, without awaiting anything between
    the check and the claim, so that two requests arriving together cannot both have it."""

    def __init__(self):
        self.owner: str | None = None
        self.stop: asyncio.Event | None = None

    def take(self, owner: str | None) -> asyncio.Event:
        """Claim the run for `owner`; BenchmarkRunning if one is under way."""
        if self.stop is not None:
            raise BenchmarkRunning()
        self.owner, self.stop = owner, asyncio.Event()
        return self.stop

    def release(self) -> None:
        self.owner, self.stop = None, None


async def _run_lines(engine, pairs, spec, admitted: Admission, stop: asyncio.Event):
    """The run's lines until it ends or its owner cancels it; an error becomes the last line."""
    try:
        lines = benchmark_events(engine, pairs, spec, admitted)
        async with aclosing(lines) as run:  # leaving early aborts the run
            async for line in run:  # progress comes every 0.25 s
                if stop.is_set():
                    yield encode(Cancelled())
                    return
                yield line
    except (ServiceError, ValueError) as err:  # a BenchmarkError is a ValueError
        yield encode(error_line(err))


def internal_routes(service: EngineService) -> APIRouter:
    """The UI process's routes over `service`."""
    router = APIRouter(prefix="/internal", include_in_schema=False)
    claim = BenchmarkClaim()

    @router.get("/status")
    async def status() -> dict:
        return {"status": service.status().to_dict(), "closing": service.closing, **load(service)}

    @router.post("/restart")
    async def restart():
        if service.closing:
            return error_response(ServerStopping())
        service.restart().add_done_callback(_quiet)  # the outcome shows in the status
        return {"restarting": True, "restarts": service.restarts}

    @router.post("/chat")
    async def chat(request: Request):
        try:
            chat = ChatRequest.parse(json.loads(await request.body()))
            events, end = await chat_events(service.engine, chat)
        except StopAsyncIteration:
            gone = EngineUnavailable("the engine ended the reply before its first token")
            return error_response(gone)
        except (ServiceError, ValueError) as err:  # ValueError: also bad JSON
            return error_response(err)
        return ClosingStream(events, end)

    @router.post("/benchmark")
    async def benchmark(request: Request):
        try:
            data = json.loads(await request.body())
            pairs, spec = parse_benchmark(data)
            owner = _owner(data)
            # From here to the claim nothing is awaited: the check and the claim are one step.
            stop = claim.take(owner)
        except (ServiceError, ValueError, TypeError) as err:  # a BenchmarkError is a ValueError
            return error_response(err)
        try:
            admitted = service.engine.admit(min(spec.limit, len(pairs)))
        except ServiceError as err:
            claim.release()
            return error_response(err)

        async def end() -> None:
            admitted.release()
            if claim.stop is stop:
                claim.release()

        lines = _run_lines(service.engine, pairs, spec, admitted, stop)
        return ClosingStream(lines, end)

    @router.post("/benchmark/cancel")
    async def cancel(request: Request):
        try:
            owner = _owner(json.loads(await request.body()))
        except ValueError as err:
            return error_response(err)
        if claim.stop is None:
            return {"run": "none"}
        if owner is None or owner != claim.owner:
            return {"run": "other"}
        claim.stop.set()
        return {"run": "cancelled"}

    return router
