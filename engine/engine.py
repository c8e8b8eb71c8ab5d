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
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from http import HTTPStatus

from engine import modelinfo
from engine.chat import DEFAULT_SYSTEM_PROMPT, chat_prompt_ids, resolve_thinking, token_ids
from engine.config import BATCH_SUBMIT_MODES, EngineConfig
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
    rank: int | None = None  # the data-parallel rank that served it (None: not known)

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
    """One engine step of one data-parallel rank, as vLLM's stat hook reports it."""

    running: int  # requests scheduled in the rank after this step
    waiting: int  # requests queued in the rank, not yet scheduled
    prompt_tokens: int  # prefilled in this step
    generated_tokens: int  # sampled in this step
    rank: int = 0  # the data-parallel rank (vLLM's engine index)


@dataclass
class RankCounters:
    """One data-parallel rank's figures: tokens generated, its scheduler's last queues."""

    generated_tokens: int = 0
    running: int = 0
    waiting: int = 0


@dataclass
class Counters:
    """Live figures from vLLM's stat hook, kept per data-parallel rank and summed: tokens
    generated, queue lengths; and the recent steps of every rank."""

    ranks: dict[int, RankCounters] = field(default_factory=dict)
    steps: deque = field(default_factory=lambda: deque(maxlen=8192))

    def rank(self, index: int) -> RankCounters:
        return self.ranks.setdefault(index, RankCounters())

    @property
    def generated_tokens(self) -> int:
        return sum(r.generated_tokens for r in list(self.ranks.values()))

    @property
    def running(self) -> int:
        return sum(r.running for r in list(self.ranks.values()))

    @property
    def waiting(self) -> int:
        return sum(r.waiting for r in list(self.ranks.values()))


def _stat_logger(counters: Counters):
    """A vLLM stat-logger class that feeds `counters`; vLLM builds one per data-parallel
    rank, with that rank's engine index."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class StepRecorder(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            self.mine = counters.rank(engine_index)
            self.engine_index = engine_index

        def record(self, scheduler_stats, iteration_stats, *args, **kwargs):
            prompt = generated = 0
            if iteration_stats is not None:
                prompt = iteration_stats.num_prompt_tokens
                generated = iteration_stats.num_generation_tokens
                self.mine.generated_tokens += generated
            if scheduler_stats is not None:
                self.mine.running = scheduler_stats.num_running_reqs
                self.mine.waiting = scheduler_stats.num_waiting_reqs
                counters.steps.append(
                    Step(self.mine.running, self.mine.waiting, prompt, generated, self.engine_index)
                )

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


def prepare_environment(config: EngineConfig) -> None:
    """Environment vLLM reads at start: the CPU backend's KV-cache size (GiB)."""
    if config.on_cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kvcache_gib))


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


def load_tokenizer(path):
    """The model folder's tokenizer (Hugging Face)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def sampling_params(
    params: GenerationParams,
    max_tokens: int,
    final_only: bool | None = None,
    detokenize: bool = True,
):
    """vLLM's SamplingParams for a request; a forced length (`ignore_eos`) is also a minimum.

    `final_only`: True, only the finished output; False, each step's new tokens; None, vLLM's
    default (the offline `LLM`).
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kind = {}
    if final_only is not None:
        final, delta = RequestOutputKind.FINAL_ONLY, RequestOutputKind.DELTA
        kind = {"output_kind": final if final_only else delta}
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        ignore_eos=params.ignore_eos,
        seed=params.seed,
        min_tokens=max_tokens if params.ignore_eos else 0,
        detokenize=detokenize,
        skip_special_tokens=True,
        **kind,
    )


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


def _in_daemon_thread(work, future: asyncio.Future) -> None:
    """Run `work()` in a daemon thread (it may never return) and settle `future` with it."""
    loop = future.get_loop()

    def settle(outcome, failed: bool) -> None:
        if not future.done():
            future.set_exception(outcome) if failed else future.set_result(outcome)

    def run() -> None:
        try:
            loop.call_soon_threadsafe(settle, work(), False)
        except BaseException as err:  # noqa: BLE001  (handed to the waiting coroutine)
            loop.call_soon_threadsafe(settle, err, True)

    threading.Thread(target=run, name="engine-build", daemon=True).start()


def _stop_child_processes() -> None:
    """End this process's children (vLLM's local ranks and DP coordinator of a build that
    never finished), so that nothing is left holding the GPUs."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()


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
        self._unfinished_failed = False  # `fail_unfinished` has ended the requests in flight

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
        prepare_environment(self.config)
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
            build = functools.partial(
                AsyncLLM.from_engine_args, args, stat_loggers=[_stat_logger(self.counters)]
            )
            self._llm = await self._with_remote_ranks(build)
            self.tokenizer = await asyncio.to_thread(load_tokenizer, self.model.path)
        self.thinking = resolve_thinking(
            self.config.thinking, self.config.model, self.model.random_weights
        )
        from engine.devices import placement  # here: `python -m engine.devices` stays clean

        self._status = replace(
            self._status,
            info={
                "model": self.model.name,
                "served_model_name": self.model.served_name,
                "model_source": self.model.source,
                "random_weights": self.model.random_weights,
                **placement(self.config),
                "vllm": vllm_version,
                "profile": self.config.profile,
                "profile_reason": self.config.profile_reason,
                "max_model_len": self.config.max_model_len,
                "thinking": self.thinking,
            },
        )

    async def _with_remote_ranks(self, build):
        """Build the AsyncLLM; with ranks on other hosts, wait for them at most the configured
        time (vLLM itself would wait forever) and say what to start there."""
        remote = self.config.remote_ranks
        if not remote:
            return await asyncio.to_thread(build)
        where = f"{self.config.data_parallel_address}:{self.config.data_parallel_rpc_port}"
        self._set(
            "loading",
            f"starting {self.config.local_ranks} rank(s) here and waiting for {remote} on other "
            f"hosts to join at {where}",
        )
        done = asyncio.get_running_loop().create_future()
        _in_daemon_thread(build, done)
        timeout = self.config.data_parallel_join_timeout
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            await asyncio.to_thread(_stop_child_processes)
            raise EngineUnavailable(
                f"the {remote} data-parallel rank(s) on other hosts did not join {where} within "
                f"{timeout:.0f} s; start them there with `python -m engine.rank` and the same "
                "engine flags (README: several hosts), then restart"
            ) from None

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
        """Stop vLLM and its processes; the engine is unusable afterwards. From the engine's
        loop, prefer `close`."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.shutdown()
        if self._status.phase != "failed":
            self._set("stopped", "engine shut down")

    async def close(self) -> None:
        """`shutdown` from the engine's loop, vLLM's output handler stopped first.

        vLLM's own shutdown ends the engine processes before it cancels that handler, which
        then reads their end as a dead engine and logs an EngineDeadError (every time with
        data parallelism, where each rank's exit is watched); stopping it first keeps a
        clean shutdown clean.
        """
        llm = self._llm
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
            # Nothing delivers their outputs now: requests still in flight end with an error
            # (unless `fail_unfinished` already gave them the restart's, which is kept).
            if not self._unfinished_failed:
                llm.output_processor.propagate_error(EngineUnavailable("the engine was shut down"))
        await asyncio.to_thread(self.shutdown)

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
        self._unfinished_failed = True

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
        chosen = self.thinking if thinking is None else thinking
        return chat_prompt_ids(self._tokenizer(), question, system_prompt, chosen is not False)

    def encode(self, text: str) -> list[int]:
        return token_ids(self._tokenizer(), text)

    def _tokenizer(self):
        if self.tokenizer is None:
            raise EngineUnavailable("engine not started")
        return self.tokenizer

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

    # ---- generation ------------------------------------------------------------------
    async def stream(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str | None = None
    ) -> AsyncIterator[Chunk]:
        """Stream a reply as text deltas; leaving the loop early aborts the request in vLLM."""
        llm = self._require()
        max_tokens = self._max_tokens(prompt_ids, params)
        sampling = sampling_params(params, max_tokens, final_only=False)
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
        submit = self._batch_submit(prompts, params, submit)
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
                completion = self._completion(i, final, len(prompts[i]), start, decode)
                done.put_nowait(replace(completion, rank=ranks[i]))
            except Exception as err:
                done.put_nowait(err)

        tasks: list[asyncio.Task] = []
        try:
            added = self._add_batch(llm, ids, prompts, samplings, submit)
            async with aclosing(added):  # a held scheduler resumes however adding ends
                async for i, outputs, rank in added:
                    ranks[i] = rank
                    tasks.append(asyncio.create_task(follow(i, outputs)))
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

    def _batch_submit(self, prompts, params, submit: str | None) -> str:
        """The submit mode of a batch, after checking that it and the batch make sense."""
        if len(prompts) != len(params):
            raise RequestError("prompts and params differ in length")
        submit = submit or self.config.batch_submit
        if submit not in BATCH_SUBMIT_MODES:
            raise RequestError(f"submit must be one of {', '.join(BATCH_SUBMIT_MODES)}")
        return submit

    async def _add_batch(self, llm, ids, prompts, samplings, submit: str) -> AsyncIterator:
        """Hand a batch to vLLM the `submit` way; yield (index, its outputs, data-parallel
        rank or None) per request.

        `legacy`, one `generate()` per request from a raw prompt, is the path from before the
        batch was held; it stays for measuring the difference (`python -m bench --batch-submit
        hold,legacy`)."""
        if submit == "legacy":
            for i, prompt in enumerate(prompts):
                yield i, llm.generate(token_prompt(prompt, raw=True), samplings[i], ids[i]), None
            return
        async with self._hold_scheduler(llm, submit == "hold"):
            for i, prompt in enumerate(prompts):
                collector = await llm.add_request(ids[i], token_prompt(prompt), samplings[i])
                yield i, _collected(collector), _rank_of(llm, collector.request_id)

    def _completion(self, index: int, final, prompt_tokens: int, start: float, decode: bool):
        """The Completion of a finished request, from its final RequestOutput."""
        piece = final.outputs[0]
        ids = list(piece.token_ids)
        ttft = getattr(getattr(final, "metrics", None), "first_token_latency", None) or None
        text = self.tokenizer.decode(ids, skip_special_tokens=True) if decode else ""
        latency = time.perf_counter() - start
        return Completion(index, ids, text, prompt_tokens, ttft, latency, piece.finish_reason)

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
