"""The one engine object: its start, admission, prompts, streaming (the core call), batches.

One `Engine` holds one `Lifecycle` (`engine.runtime.lifecycle`: the vLLM `AsyncLLM`, its
status, health and shutdown) on one asyncio loop (`engine.runtime.service` runs it on a
thread of its own for callers elsewhere). Streaming is the core call; a batch is many requests
that report only their final output, added while vLLM's scheduler is held so that the engine's
first step holds the whole batch.

    engine = Engine(make_config("cpu", model="tiny-random"))
    await engine.start()                     # resolve model, build vLLM, warm up
    async for chunk in engine.stream(ids, GenerationParams(max_new_tokens=64)):
        print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, aclosing, asynccontextmanager, nullcontext
from dataclasses import replace

from engine.models.sources import ResolvedModel
from engine.qwen3.prompt import DEFAULT_SYSTEM_PROMPT, FittedPrompt, chat_prompt_ids, fit_to_context
from engine.qwen3.prompt import token_ids as encode_text
from engine.runtime.admissions import LocalCount
from engine.runtime.lifecycle import Lifecycle
from engine.runtime.slots import Slot
from engine.runtime.vllm_args import sampling_params, token_prompt
from engine.runtime.warmup import warm_up
from engine.settings.config import EngineConfig
from engine.types import (
    Chunk,
    Completion,
    EngineBusy,
    EngineUnavailable,
    GenerationParams,
    RequestError,
    ServerStopping,
)

BUSY = "server busy: {queued} requests in the engine, limit {limit}; try again shortly"
# Run on every new engine once vLLM is up and warm, before it says ready (e.g. building an HTTP
# server's state on it).
BeforeReady = Callable[["Engine"], Awaitable[None]]


class Admission:
    """Room for `count` requests, held in the admission limit from the moment they are let in
    until their caller lets go (`release`, or leaving the `with` block); releasing is once."""

    def __init__(self, engine: Engine, count: int):
        self.engine, self.count = engine, count

    def release(self) -> None:
        self.engine.let_go(self.count)
        self.count = 0

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_ENDING: set[asyncio.Task] = set()


async def _run_to_end(cleanup) -> None:
    """Await `cleanup` (an abort) in a task of its own, so that it runs to its end even when
    the caller is being cancelled: a closed HTTP stream cancels its handler, and anyio's cancel
    scope cancels every await in the handler's `finally` blocks again."""
    task = asyncio.ensure_future(cleanup)
    _ENDING.add(task)
    task.add_done_callback(_ENDING.discard)
    await asyncio.shield(task)


def _rank_of(llm, internal_id: str) -> int | None:
    """The data-parallel rank vLLM's load balancer gave a request just added, by vLLM's
    internal request id (0 without data parallelism; None once it has finished)."""
    placed = getattr(llm.engine_core, "reqs_in_flight", None)
    if placed is None:
        return 0
    identity = placed.get(internal_id)
    return None if identity is None else int.from_bytes(identity, "little")


async def _collected(collector) -> AsyncIterator:
    """The RequestOutputs of one request added with `AsyncLLM.add_request`, until finished."""
    try:
        while True:
            out = collector.get_nowait() or await collector.get()
            yield out
            if out.finished:
                return
    finally:
        collector.close()


class Engine:
    """The one shared AsyncLLM: its start, admission, prompts and generation; its life (build,
    status, health, shutdown) is held in `life`."""

    def __init__(
        self,
        config: EngineConfig,
        before_ready: Sequence[BeforeReady] = (),
        attach: Slot | None = None,
        model: ResolvedModel | None = None,
        admissions=None,
    ):
        self.config = config
        self.before_ready = before_ready
        self.life = Lifecycle(config, attach, model)  # attach: an API process's client
        self._holds = 0  # batches being added while the scheduler is held
        # requests let in and not yet let go (see `admit`): here, or over the API processes
        self._admitted = admissions or LocalCount()

    # ---- start -----------------------------------------------------------------------
    async def start(self) -> None:
        """Resolve the model, build vLLM, warm up, run the before-ready hooks; then ready."""
        life = self.life
        life.began()
        try:
            await life.build()
            await warm_up(self)
            if self.before_ready:
                async with life.startup_phase("api", "loading", "building the HTTP API's state"):
                    for hook in self.before_ready:
                        await hook(self)
        except BaseException as err:
            life.start_failed(err)
            raise
        life.ready()

    # ---- what the life holds, for callers ------------------------------------------
    @property
    def status(self):
        return self.life.status

    @property
    def model(self):
        return self.life.model

    @property
    def tokenizer(self):
        return self.life.tokenizer

    @property
    def thinking(self) -> bool | None:
        return self.life.thinking

    @property
    def max_model_len(self) -> int:
        return self.life.max_model_len

    @property
    def counters(self):
        return self.life.counters

    @property
    def async_llm(self):
        """vLLM's AsyncLLM once built (None before), for code that serves vLLM's own APIs."""
        return self.life.llm

    @property
    def stopping(self) -> bool:
        return self.life.stopping

    def startup_phase(self, name: str, phase: str, message: str):
        return self.life.startup_phase(name, phase, message)

    def report(self, message: str, progress: float | None) -> None:
        self.life.report(message, progress)

    def dead_reason(self) -> str | None:
        return self.life.dead_reason()

    def mark_failed(self, reason: str) -> None:
        self.life.mark_failed(reason)

    def stop_requests(self, error: Exception) -> None:
        self.life.stop_requests(error)

    def unfinished_requests(self) -> int:
        return self.life.unfinished_requests()

    async def close(self) -> None:
        await self.life.close()

    # ---- admission -------------------------------------------------------------------
    def admit(self, count: int = 1, ready: bool = True) -> Admission:
        """The one admission point: reserve room for `count` requests now, or raise
        EngineUnavailable (starting, restarting, failed, shutting down) or EngineBusy (the
        admission limit). The room is held until the Admission is released, so callers racing
        between the check and vLLM's queue cannot both take the last slot."""
        if self.stopping:
            raise self.life.ended_by
        if self.life.llm is None or (ready and not self.life.status.ready):
            raise EngineUnavailable(
                f"engine not ready: {self.life.status.phase} ({self.life.status.message})"
            )
        # vLLM's count can run ahead of ours for a moment (an abort not yet processed, an
        # OpenAI request with several prompts), so the larger of the two counts.
        limit = self.config.admission_limit
        queued = self._admitted.reserve(count, limit, self.unfinished_requests())
        if queued is not None:
            raise EngineBusy(BUSY.format(queued=queued, limit=limit))
        return Admission(self, count)

    def let_go(self, count: int) -> None:
        """Give back room an Admission held."""
        self._admitted.release(count)

    def admitted(
        self, held: Admission | None, count: int, ready: bool = True
    ) -> AbstractContextManager:
        """`held` as it is (its owner lets go of it), or a new admission of `count`, let go of
        on leaving the `with` block."""
        return nullcontext(held) if held is not None else self.admit(count, ready)

    # ---- prompts ---------------------------------------------------------------------
    def chat_prompt(
        self,
        question: str,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        thinking: bool | None = None,
    ) -> list[int]:
        """Token ids of one question as a chat prompt; `thinking` None: the engine's
        course-prompt setting (see `engine.qwen3.prompt.default_thinking`)."""
        chosen = self.thinking if thinking is None else thinking
        return chat_prompt_ids(self._tokenizer(), question, system_prompt, chosen is not False)

    def fit_conversation(
        self, messages: list[dict], thinking: bool, params: GenerationParams
    ) -> FittedPrompt:
        """A conversation's prompt within this engine's context (oldest turns dropped), leaving
        room for the reply `params` asks for."""
        reply = self._reply_budget(params)
        return fit_to_context(self._tokenizer(), messages, thinking, self.max_model_len, reply)

    def encode(self, text: str) -> list[int]:
        return encode_text(self._tokenizer(), text)

    def _tokenizer(self):
        if self.tokenizer is None:
            raise EngineUnavailable("engine not started")
        return self.tokenizer

    def _max_tokens(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        """New-token budget after checks against the context and the server's cap."""
        params.validate()
        limit = self.max_model_len
        if not prompt_ids:
            raise RequestError("the prompt is empty")
        if len(prompt_ids) >= limit:
            raise RequestError(
                f"the prompt has {len(prompt_ids)} tokens; this engine takes at most "
                f"{limit - 1} (max_model_len {limit}, at least one new token)"
            )
        return min(self._reply_budget(params), limit - len(prompt_ids))

    def _reply_budget(self, params: GenerationParams) -> int:
        """The new tokens a request may have: what it asks for, within the server's cap (the
        one place the cap applies)."""
        return min(params.max_new_tokens, self.config.max_new_tokens_cap)

    # ---- generation ------------------------------------------------------------------
    async def stream(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        request_id: str | None = None,
        ready: bool = True,
        admitted: Admission | None = None,
    ) -> AsyncIterator[Chunk]:
        """Stream a reply as text deltas; leaving the loop early aborts the request in vLLM.

        `ready` False: also before the engine says ready (the warm-up). `admitted`: the room
        the caller already holds for it (else it is admitted here)."""
        with self.admitted(admitted, 1, ready):  # one generator: no extra hop per chunk
            max_tokens = self._max_tokens(prompt_ids, params)
            sampling = sampling_params(params, max_tokens, final_only=False)
            request_id = request_id or f"chat-{uuid.uuid4().hex[:12]}"
            start, first, produced, finished = time.perf_counter(), None, 0, False
            outputs = self.life.llm.generate(token_prompt(prompt_ids), sampling, request_id)
            try:
                async for out in outputs:
                    piece = out.outputs[0]
                    produced += len(piece.token_ids)
                    now = time.perf_counter() - start
                    if first is None and produced:
                        first = now
                    finished = out.finished
                    if finished and piece.finish_reason == "abort":
                        raise self._ended_error()  # vLLM ended it (a stop signal), not the caller
                    yield Chunk(piece.text, produced, finished, piece.finish_reason, first, now)
            except (EngineUnavailable, RequestError, EngineBusy):
                raise
            except Exception as err:
                self._raise_as_engine_error(err)
            finally:
                await _run_to_end(self._end_stream(outputs, request_id, finished))

    async def generate_many(
        self,
        prompts: Sequence[list[int]],
        params: Sequence[GenerationParams],
        decode: bool = True,
        ready: bool = True,
        request_prefix: str = "batch",
        hold: bool = True,
        admitted: Admission | None = None,
    ) -> AsyncIterator[Completion]:
        """Submit every prompt as one batch; yield each request as it finishes (completion order).

        `hold` (the default) adds every request while vLLM's scheduler is held, so the engine's
        first step already holds the whole batch; otherwise they are added while the engine
        runs. Closing the iterator early aborts every unfinished request. `admitted`: the room
        the caller already holds for the batch (else it is admitted here).
        """
        if len(prompts) != len(params):
            raise RequestError("prompts and params differ in length")
        with self.admitted(admitted, len(prompts), ready):
            batch = self._generate_many(prompts, params, decode, request_prefix, hold)
            async with aclosing(batch) as completions:
                async for completion in completions:
                    yield completion

    async def _generate_many(
        self,
        prompts: Sequence[list[int]],
        params: Sequence[GenerationParams],
        decode: bool,
        request_prefix: str,
        hold: bool,
    ) -> AsyncIterator[Completion]:
        """`generate_many` once admitted."""
        samplings = [
            sampling_params(s, self._max_tokens(p, s), final_only=True, detokenize=False)
            for p, s in zip(prompts, params, strict=True)
        ]
        tag = f"{request_prefix}-{uuid.uuid4().hex[:8]}"
        ids = [f"{tag}-{i}" for i in range(len(prompts))]
        done: asyncio.Queue = asyncio.Queue()
        unfinished = set(ids)
        ranks: list[int | None] = [None] * len(prompts)
        start = time.perf_counter()

        async def follow(i: int, outputs) -> None:
            try:
                final = None
                async for out in outputs:
                    final = out
                unfinished.discard(ids[i])
                if final.outputs[0].finish_reason == "abort":
                    raise self._ended_error()
                completion = self._completion(i, final, len(prompts[i]), start, decode)
                done.put_nowait(replace(completion, rank=ranks[i]))
            except Exception as err:
                done.put_nowait(err)

        tasks: list[asyncio.Task] = []
        try:
            async with self._hold_scheduler(hold):
                for i, prompt in enumerate(prompts):
                    collector = await self.life.llm.add_request(
                        ids[i], token_prompt(prompt), samplings[i]
                    )
                    ranks[i] = _rank_of(self.life.llm, collector.request_id)
                    tasks.append(asyncio.create_task(follow(i, _collected(collector))))
            for _ in range(len(prompts)):
                item = await done.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        except (EngineUnavailable, RequestError, EngineBusy):
            raise
        except Exception as err:
            self._raise_as_engine_error(err)
        finally:
            await _run_to_end(self._end_batch(tasks, unfinished))

    async def _end_stream(self, outputs, request_id: str, finished: bool) -> None:
        """Close a stream's vLLM iterator and abort its request if it did not finish."""
        await outputs.aclose()
        if not finished and self._can_abort():
            await self.life.llm.abort(request_id)

    async def _end_batch(self, tasks: list[asyncio.Task], unfinished: set[str]) -> None:
        """Stop following a batch and abort its unfinished requests."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if unfinished and self._can_abort():
            await self.life.llm.abort(sorted(unfinished))

    def _completion(self, index: int, final, prompt_tokens: int, start: float, decode: bool):
        """The Completion of a finished request, from its final RequestOutput."""
        piece = final.outputs[0]
        ids = list(piece.token_ids)
        ttft = getattr(getattr(final, "metrics", None), "first_token_latency", None) or None
        text = self.tokenizer.decode(ids, skip_special_tokens=True) if decode else ""
        latency = time.perf_counter() - start
        return Completion(index, ids, text, prompt_tokens, ttft, latency, piece.finish_reason)

    @asynccontextmanager
    async def _hold_scheduler(self, hold: bool):
        """Keep vLLM's scheduler from stepping while a batch is added (nested holds share one).

        vLLM's `keep` pause freezes running requests in place and queues new ones; the resume
        message follows the batch's add messages on the same socket, so the engine core sees
        every request of the batch before its next step.
        """
        client = self.life.llm.engine_core
        if not hold:
            yield
            return
        self._holds += 1
        try:
            if self._holds == 1:
                await client.pause_scheduler_async(mode="keep", clear_cache=False)
            yield
        finally:
            self._holds -= 1
            if self._holds == 0 and self.life.llm is not None and not self.life.llm.errored:
                await _run_to_end(client.resume_scheduler_async())

    # ---- errors ----------------------------------------------------------------------
    def _can_abort(self) -> bool:
        """Whether aborting requests still means anything (not on a dead, failed or stopping
        engine, which may be shutting down in another thread)."""
        return (
            self.life.llm is not None
            and not self.life.llm.errored
            and self.life.status.phase != "failed"
            and self.life.ended_by is None
        )

    def _ended_error(self) -> EngineUnavailable:
        """The error of a request that vLLM, not its caller, ended."""
        if isinstance(self.life.ended_by, EngineUnavailable):
            return self.life.ended_by
        if self.life.ended_by is not None:
            return EngineUnavailable(str(self.life.ended_by))
        return ServerStopping("the engine stopped the request: the server is shutting down")

    def _raise_as_engine_error(self, err: BaseException):
        """Raise `err` as the engine's own error type, with the reason in words."""
        from vllm.exceptions import QueueOverflowError

        if isinstance(err, QueueOverflowError):
            limit = self.config.admission_limit
            raise EngineBusy(BUSY.format(queued=self.unfinished_requests(), limit=limit)) from err
        if self.life.ended_by is not None:
            raise self._ended_error() from err
        reason = self.dead_reason()
        if reason:
            self.mark_failed(reason)
            raise EngineUnavailable(reason) from err
        if self.life.status.phase == "failed":
            raise EngineUnavailable(f"engine stopped: {self.life.status.message}") from err
        if isinstance(err, ValueError):
            raise RequestError(str(err)) from err
        raise err
