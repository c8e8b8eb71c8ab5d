"""The shared vLLM engine: start, warm-up, status, streaming, batches, abort, shutdown.

One `Engine` wraps one `AsyncLLM` and lives on one asyncio loop (see `engine.service` for
using it from other threads). Streaming is the core call; a batch is many concurrent
streams that report only their final output.

    engine = Engine(make_config("cpu", model="tiny-random"))
    await engine.start()                     # resolve model, build vLLM, warm up
    async for chunk in engine.stream(prompt, GenerationParams(max_new_tokens=64)):
        print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from http import HTTPStatus

from engine import modelinfo
from engine.chat import DEFAULT_SYSTEM_PROMPT, build_messages, render_prompt, resolve_thinking
from engine.config import BATCH_SUBMIT_MODES, EngineConfig
from engine.devices import device_name
from engine.models import ResolvedModel, resolve_model

MODELINFO_TIMEOUT_S = 120  # the side inspection of the model class (engine.modelinfo)
REASONING_PARSER = "qwen3"  # vLLM's parser for Qwen3's <think>...</think>
WARMUP_QUESTION = "CUDA中矩阵乘法算子如何利用共享内存减少全局内存访问？请结合线程块说明。"


class RequestError(ValueError):
    """A request the engine will not run (too long, bad sampling values); it keeps serving."""


class EngineUnavailable(RuntimeError):
    """The engine is not ready: still starting, failed, restarting or shut down."""


class EngineBusy(RuntimeError):
    """Admitting the request would exceed the configured queue; try again shortly."""


@dataclass(frozen=True)
class GenerationParams:
    """Per-request sampling settings."""

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    ignore_eos: bool = False
    seed: int | None = None

    def validate(self) -> None:
        """Raise RequestError naming the first value out of range."""
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise RequestError(
                f"max_new_tokens must be a whole number >= 1, got {self.max_new_tokens!r}"
            )
        if not 0.0 <= self.temperature <= 2.0:
            raise RequestError(f"temperature must be within 0..2, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise RequestError(f"top_p must be within (0, 1], got {self.top_p!r}")
        if not (self.top_k == -1 or 1 <= self.top_k <= 1000):
            raise RequestError(f"top_k must be -1 (off) or within 1..1000, got {self.top_k!r}")


GREEDY = GenerationParams(temperature=0.0, top_p=1.0, top_k=-1)


@dataclass(frozen=True)
class Chunk:
    """One streamed piece of a reply."""

    text: str
    output_tokens: int  # so far, from token ids
    finished: bool
    finish_reason: str | None
    ttft_s: float | None  # seconds from submission to the first token
    elapsed_s: float


@dataclass(frozen=True)
class Completion:
    """One finished request of a batch."""

    index: int
    token_ids: list[int]
    text: str
    prompt_tokens: int
    ttft_s: float | None
    latency_s: float
    finish_reason: str | None

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class EngineStatus:
    """What the engine is doing, for status lines and readiness checks."""

    phase: str  # idle, loading, warming, ready, failed, stopped
    message: str
    progress: float | None = None
    error: str | None = None
    startup_seconds: float | None = None
    info: dict = field(default_factory=dict)
    # Start-up phases finished so far, in order: (name, seconds); and when the current began.
    startup_phases: tuple[tuple[str, float], ...] = ()
    phase_started: float | None = None  # time.time() at the start of the current phase

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def phases_text(self) -> str:
        """The finished start-up phases: 'model 0 s · import 20 s · engine 20 s'."""
        return " · ".join(f"{name} {took:.0f} s" for name, took in self.startup_phases)


@dataclass(frozen=True)
class Step:
    """One engine step as vLLM's stat hook reports it."""

    running: int  # requests scheduled in the engine after this step
    waiting: int  # requests queued in the engine, not yet scheduled
    prompt_tokens: int  # prefilled in this step
    generated_tokens: int  # sampled in this step


@dataclass
class Counters:
    """Live figures from vLLM's stat hook: tokens generated, queue lengths, recent steps."""

    generated_tokens: int = 0
    running: int = 0
    waiting: int = 0
    steps: deque = field(default_factory=lambda: deque(maxlen=4096))


def _stat_logger(counters: Counters):
    """A vLLM stat-logger class that feeds `counters` every engine step."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class StepRecorder(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, *args, **kwargs):
            prompt = generated = 0
            if iteration_stats is not None:
                prompt = iteration_stats.num_prompt_tokens
                generated = iteration_stats.num_generation_tokens
                counters.generated_tokens += generated
            if scheduler_stats is not None:
                counters.running = scheduler_stats.num_running_reqs
                counters.waiting = scheduler_stats.num_waiting_reqs
                counters.steps.append(Step(counters.running, counters.waiting, prompt, generated))

        def log_engine_initialized(self):
            pass

    return StepRecorder


def engine_kwargs_for(config: EngineConfig, model: ResolvedModel) -> dict:
    """vLLM engine keyword arguments for a config and a resolved model.

    Settings this vLLM version does not know are dropped with a note, so one configuration
    runs on every supported vLLM release.
    """
    import dataclasses as dc

    from vllm.engine.arg_utils import EngineArgs

    kwargs = {
        "model": str(model.path),
        "tokenizer": str(model.path),
        # The name clients and the metrics' model_name label see, not the folder's path.
        "served_model_name": model.served_name,
        # Where vLLM's OpenAI server and structured outputs split Qwen3's <think> block.
        "reasoning_parser": REASONING_PARSER,
        **config.engine_kwargs(),
    }
    if model.random_weights:
        kwargs["load_format"] = "dummy"
    known = {f.name for f in dc.fields(EngineArgs)}
    dropped = sorted(set(kwargs) - known)
    if dropped:
        print(f"[engine] this vLLM has no setting {', '.join(dropped)}; ignored", flush=True)
    return {k: v for k, v in kwargs.items() if k in known}


def _import_vllm():
    """vLLM's AsyncLLM class and version (importing vLLM takes seconds)."""
    from vllm import __version__
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM, __version__


def _freeze_startup_heap() -> None:
    """Move start-up objects out of the garbage collector's sight, as vLLM's own server does.

    Full collections then skip vLLM's, the tokenizer's and the UI's long-lived objects; a
    collection during a 358-request batch otherwise stalls the front end for tenths of a second.
    """
    from vllm.utils.gc_utils import freeze_gc_heap

    freeze_gc_heap()


def _load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def token_prompt(ids: Sequence[int], raw: bool = False) -> dict:
    """A prompt of token ids in the form vLLM adds without a thread hop.

    vLLM 0.32 sends raw prompts (`{"prompt_token_ids": ...}`, or `raw=True`) through its
    renderer's thread pool one request at a time; a rendered `TokensInput` is processed inline.
    """
    if raw or not _tokens_input_supported():
        return {"prompt_token_ids": list(ids)}
    return {"type": "token", "prompt_token_ids": list(ids)}


@functools.cache
def _tokens_input_supported() -> bool:
    try:
        from vllm.inputs.engine import TokensInput  # noqa: F401  (vLLM 0.32 and later)
    except ImportError:
        return False
    return True


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


def build_engine_args(config: EngineConfig, model: ResolvedModel):
    """vLLM's AsyncEngineArgs for a config and a resolved model."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(**engine_kwargs_for(config, model))


BeforeReady = Callable[["Engine"], Awaitable[None]]


class Engine:
    """The one shared AsyncLLM with its tokenizer, warm-up and status.

    `before_ready` coroutines run once vLLM is up and warm, before the status says ready
    (e.g. building an HTTP server's state on this engine).
    """

    def __init__(self, config: EngineConfig, before_ready: Sequence[BeforeReady] = ()):
        self.config = config
        self.before_ready = before_ready
        self.counters = Counters()
        self.model: ResolvedModel | None = None
        self.tokenizer = None
        self.thinking = config.thinking  # the course prompt's thinking setting, once started
        self._llm = None
        self._status = EngineStatus("idle", "not started")
        self._started = 0.0
        self._holds = 0  # batches being submitted while the scheduler is held

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def status(self) -> EngineStatus:
        return self._status

    @property
    def async_llm(self):
        """vLLM's AsyncLLM once built (None before), for code that serves vLLM's own APIs."""
        return self._llm

    def _set(self, phase: str, message: str, progress: float | None = None, **kw) -> None:
        self._status = replace(self._status, phase=phase, message=message, progress=progress, **kw)
        print(
            f"[engine] {phase}: {message}" + (f" ({progress:.0%})" if progress is not None else ""),
            flush=True,
        )

    @asynccontextmanager
    async def _startup_phase(self, name: str, phase: str, message: str):
        """Time one start-up phase; the status shows it live and keeps its seconds."""
        began = time.perf_counter()
        self._set(phase, message, phase_started=time.time())
        yield
        took = round(time.perf_counter() - began, 1)
        self._status = replace(
            self._status, startup_phases=(*self._status.startup_phases, (name, took))
        )

    async def start(self) -> None:
        """Resolve the model, build vLLM, warm up at the benchmark's batch; then ready."""
        self._started = time.perf_counter()
        try:
            await self._build()
            await self.warm_up()
            if self.before_ready:
                async with self._startup_phase("api", "loading", "building the HTTP API's state"):
                    for hook in self.before_ready:
                        await hook(self)
            _freeze_startup_heap()
        except BaseException as err:
            self._set(
                "failed",
                f"start failed: {type(err).__name__}: {err}",
                error=f"{type(err).__name__}: {err}",
            )
            raise
        seconds = time.perf_counter() - self._started
        self._status = replace(self._status, startup_seconds=round(seconds, 1))
        phases = self._status.phases_text
        self._set("ready", f"ready in {seconds:.0f} s ({phases})", phase_started=None)

    async def _build(self) -> None:
        loop = asyncio.get_running_loop()

        def progress(message: str, fraction: float | None) -> None:
            loop.call_soon_threadsafe(self._set, "loading", message, fraction)

        async with self._startup_phase("model", "loading", f"resolving model {self.config.model}"):
            self.model = await asyncio.to_thread(resolve_model, self.config.model, progress)
        if self.config.on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.config.cpu_kvcache_gib))
        # vLLM's first-start model inspection imports vLLM in a process of its own: run it
        # now, beside this process's import, rather than after it.
        side = modelinfo.start(self.model.path)
        async with self._startup_phase("import", "loading", "importing vLLM"):
            AsyncLLM, vllm_version = await asyncio.to_thread(_import_vllm)
        engine_message = "starting vLLM: load weights, compile, capture CUDA graphs"
        if self.config.on_cpu:
            engine_message = "starting vLLM on the CPU: load weights, allocate the KV cache"
        async with self._startup_phase("engine", "loading", engine_message):
            await asyncio.to_thread(modelinfo.wait, side, MODELINFO_TIMEOUT_S)
            args = build_engine_args(self.config, self.model)
            self._llm = await asyncio.to_thread(
                AsyncLLM.from_engine_args, args, stat_loggers=[_stat_logger(self.counters)]
            )
            self.tokenizer = await asyncio.to_thread(_load_tokenizer, self.model.path)
        self.thinking = resolve_thinking(
            self.config.thinking, self.config.model, self.model.random_weights
        )
        self._status = replace(
            self._status,
            info={
                "model": self.model.name,
                "served_model_name": self.model.served_name,
                "model_source": self.model.source,
                "random_weights": self.model.random_weights,
                "device": device_name(self.config),
                "vllm": vllm_version,
                "profile": self.config.profile,
                "max_model_len": self.config.max_model_len,
                "thinking": self.thinking,
            },
        )

    async def warm_up(self) -> None:
        """Run one batch at the benchmark's shape so compile and graphs are paid before use."""
        n = self.config.warmup_batch
        if n == 0:
            return
        async with self._startup_phase("warm-up", "warming", f"warm-up batch of {n}"):
            prompts = [self.chat_prompt(f"{WARMUP_QUESTION} ({i})") for i in range(n)]
            params = replace(GREEDY, max_new_tokens=self.config.warmup_tokens, ignore_eos=True)
            done = 0
            async for _ in self.generate_many(
                prompts, [params] * n, decode=False, require_ready=False
            ):
                done += 1
                if done % max(1, n // 20) == 0 or done == n:
                    self._set("warming", f"warm-up batch: {done} of {n} done", done / n)

    def shutdown(self) -> None:
        """Stop vLLM and its processes; the engine is unusable afterwards."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.shutdown()
        if self._status.phase != "failed":
            self._set("stopped", "engine shut down")

    # ---- health ----------------------------------------------------------------------
    def dead_reason(self) -> str | None:
        """Why the engine died, or None while it lives (or has not started)."""
        if self._llm is None or not self._llm.errored:
            return None
        return f"engine process died ({type(self._llm.dead_error).__name__})"

    def mark_failed(self, reason: str) -> None:
        self._set("failed", reason, error=reason)

    def fail_unfinished(self, reason: str) -> None:
        """End every request in flight with an error (503 over vLLM's HTTP API), before a
        restart shuts vLLM down: shutting down alone ends them with a quiet 'abort' finish,
        which a client takes for a complete reply."""
        llm = self._llm
        if llm is None or llm.errored:
            return  # a dead engine has already failed its requests
        from vllm.exceptions import GracefulHTTPError

        error = GracefulHTTPError(
            f"engine restarting ({reason}); try again shortly", HTTPStatus.SERVICE_UNAVAILABLE
        )
        llm.output_processor.propagate_error(error)

    def unfinished_requests(self) -> int:
        """Requests vLLM still tracks (running, waiting or being aborted)."""
        if self._llm is None:
            return 0
        return self._llm.output_processor.get_num_unfinished_requests()  # vLLM 0.26 and 0.32

    def require_ready(self) -> None:
        """Raise EngineUnavailable unless the engine can take requests now."""
        self._require(admit=0)

    def admit(self, count: int = 1):
        """The AsyncLLM, if it is ready and `count` more requests fit the queue limit; else
        raise EngineUnavailable or EngineBusy. For callers that drive vLLM themselves."""
        return self._require(admit=count)

    def _require(self, ready: bool = True, admit: int = 1):
        if self._llm is None or (ready and not self._status.ready):
            raise EngineUnavailable(
                f"engine not ready: {self._status.phase} ({self._status.message})"
            )
        queued, limit = self.unfinished_requests(), self.config.max_queued_requests
        if queued + admit > limit:
            raise EngineBusy(
                f"server busy: {queued} requests in the engine, limit {limit}; try again shortly"
            )
        return self._llm

    # ---- prompts ---------------------------------------------------------------------
    def chat_prompt(
        self,
        question: str,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        thinking: bool | None = None,
    ) -> list[int]:
        """Token ids of one question as a chat prompt, generation prompt open.

        `thinking` None: the engine's course-prompt setting (see `engine.chat.default_thinking`).
        """
        messages = build_messages([], question, system_prompt)
        chosen = self.thinking if thinking is None else thinking
        return self.encode(render_prompt(self.tokenizer, messages, chosen is not False))

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise EngineUnavailable("engine not started")
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _max_tokens(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        """New-token budget after checks against max_model_len and the server cap."""
        params.validate()
        limit = self.config.max_model_len
        if not prompt_ids:
            raise RequestError("the prompt is empty")
        if len(prompt_ids) >= limit:
            raise RequestError(
                f"the prompt has {len(prompt_ids)} tokens; this engine takes at most "
                f"{limit - 1} (max_model_len {limit}, at least one new token)"
            )
        return min(params.max_new_tokens, self.config.max_new_tokens_cap, limit - len(prompt_ids))

    def _sampling(
        self, params: GenerationParams, max_tokens: int, final_only: bool, detokenize: bool = True
    ):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kind = RequestOutputKind.FINAL_ONLY if final_only else RequestOutputKind.DELTA
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            ignore_eos=params.ignore_eos,
            seed=params.seed,
            min_tokens=max_tokens if params.ignore_eos else 0,
            output_kind=kind,
            detokenize=detokenize,
            skip_special_tokens=True,
        )

    # ---- generation ------------------------------------------------------------------
    async def stream(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str | None = None
    ) -> AsyncIterator[Chunk]:
        """Stream a reply as text deltas; leaving the loop early aborts the request in vLLM."""
        llm = self._require()
        sampling = self._sampling(params, self._max_tokens(prompt_ids, params), final_only=False)
        request_id = request_id or f"chat-{uuid.uuid4().hex[:12]}"
        start, first, produced, finished = time.perf_counter(), None, 0, False
        outputs = llm.generate(token_prompt(prompt_ids), sampling, request_id)
        try:
            async for out in outputs:
                piece = out.outputs[0]
                produced += len(piece.token_ids)
                now = time.perf_counter() - start
                if first is None and produced:
                    first = now
                finished = out.finished
                yield Chunk(piece.text, produced, finished, piece.finish_reason, first, now)
        except Exception as err:
            self._raise_clear(err)
        finally:
            await outputs.aclose()
            if not finished and self._can_abort():
                await self._llm.abort(request_id)

    async def generate_many(
        self,
        prompts: Sequence[list[int]],
        params: Sequence[GenerationParams],
        decode: bool = True,
        require_ready: bool = True,
        request_prefix: str = "batch",
        submit: str | None = None,
    ) -> AsyncIterator[Completion]:
        """Submit every prompt as one batch; yield each request as it finishes (completion order).

        `submit` (default: the config's `batch_submit`): `hold` adds every request while the
        scheduler is held, so the engine's first step already sees the whole batch; `direct`
        adds them one after another while the engine runs; `legacy` starts one `generate()`
        per request from raw prompts. Closing the iterator early aborts every unfinished request.
        """
        llm = self._require(ready=require_ready, admit=len(prompts))
        if len(prompts) != len(params):
            raise RequestError("prompts and params differ in length")
        submit = submit or self.config.batch_submit
        if submit not in BATCH_SUBMIT_MODES:
            raise RequestError(f"submit must be one of {', '.join(BATCH_SUBMIT_MODES)}")
        budgets = [self._max_tokens(p, s) for p, s in zip(prompts, params, strict=True)]
        tag = f"{request_prefix}-{uuid.uuid4().hex[:8]}"
        ids = [f"{tag}-{i}" for i in range(len(prompts))]
        samplings = [
            self._sampling(s, b, final_only=True, detokenize=False)
            for s, b in zip(params, budgets, strict=True)
        ]
        done: asyncio.Queue = asyncio.Queue()
        unfinished = set(ids)
        start = time.perf_counter()

        def finish(i: int, final) -> None:
            unfinished.discard(ids[i])
            piece = final.outputs[0]
            token_ids = list(piece.token_ids)
            metrics = getattr(final, "metrics", None)
            ttft = getattr(metrics, "first_token_latency", None) or None
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True) if decode else ""
            done.put_nowait(
                Completion(
                    i,
                    token_ids,
                    text,
                    len(prompts[i]),
                    ttft,
                    time.perf_counter() - start,
                    piece.finish_reason,
                )
            )

        async def follow(i: int, outputs) -> None:
            try:
                final = None
                async for out in outputs:
                    final = out
                finish(i, final)
            except Exception as err:
                done.put_nowait(err)

        tasks: list[asyncio.Task] = []
        try:
            if submit == "legacy":
                for i in range(len(prompts)):
                    stream = llm.generate(token_prompt(prompts[i], raw=True), samplings[i], ids[i])
                    tasks.append(asyncio.create_task(follow(i, stream)))
            else:
                async with self._hold_scheduler(llm, submit == "hold"):
                    for i in range(len(prompts)):
                        collector = await llm.add_request(
                            ids[i], token_prompt(prompts[i]), samplings[i]
                        )
                        tasks.append(asyncio.create_task(follow(i, _collected(collector))))
            for _ in range(len(prompts)):
                item = await done.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        except Exception as err:
            self._raise_clear(err)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if unfinished and self._can_abort():
                await self._llm.abort(sorted(unfinished))

    @asynccontextmanager
    async def _hold_scheduler(self, llm, hold: bool):
        """Keep vLLM's scheduler from stepping while a batch is added (nested holds share one).

        vLLM's `keep` pause freezes running requests in place and queues new ones; the resume
        message follows the batch's add messages on the same socket, so the engine core sees
        every request of the batch before its next step.
        """
        client = getattr(llm, "engine_core", None)
        if not hold or not hasattr(client, "pause_scheduler_async"):
            yield
            return
        self._holds += 1
        try:
            if self._holds == 1:
                await client.pause_scheduler_async(mode="keep", clear_cache=False)
            yield
        finally:
            self._holds -= 1
            if self._holds == 0 and not llm.errored:
                await client.resume_scheduler_async()

    def _can_abort(self) -> bool:
        """Whether aborting requests still means anything (not on a dead or failed engine,
        which may be shutting down in another thread)."""
        return self._llm is not None and not self._llm.errored and self._status.phase != "failed"

    def _raise_clear(self, err: BaseException):
        reason = self.dead_reason()
        if reason:
            self.mark_failed(reason)
            raise EngineUnavailable(reason) from err
        if self._status.phase == "failed":  # e.g. requests ended by `fail_unfinished`
            raise EngineUnavailable(f"engine stopped: {self._status.message}") from err
        if isinstance(err, ValueError):
            raise RequestError(str(err)) from err
        raise err
