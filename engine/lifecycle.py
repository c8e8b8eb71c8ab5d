"""The engine's life: start (model, vLLM import, build, warm-up), status, health, shutdown.

`EngineLifecycle` owns one vLLM `AsyncLLM` on one asyncio loop; `engine.engine.Engine` adds
generation on top. A start reports each phase (model, import, engine, warm-up, api) with its
seconds in `status`; `stop_requests` ends the requests in flight with a clear error before a
shutdown or a restart, so that no client takes a cut-off reply for a whole one.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from http import HTTPStatus

from engine import modelinfo, vllm_args
from engine.chat import resolve_thinking
from engine.children import run_in_daemon_thread, stop_engine_processes
from engine.config import EngineConfig
from engine.models import ResolvedModel, resolve_model
from engine.stats import Counters, stat_logger
from engine.types import EngineStatus, EngineUnavailable, ServerStopping

MODELINFO_TIMEOUT_S = 120  # the side inspection of the model class (engine.modelinfo)
SHUTDOWN_TIMEOUT_S = 5.0  # an engine process's own clean exit, before it is killed

BeforeReady = Callable[["EngineLifecycle"], Awaitable[None]]


def _import_vllm():
    """vLLM's AsyncLLM class and version (importing vLLM takes seconds)."""
    from vllm import __version__
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM, __version__


def _freeze_startup_heap() -> None:
    """Move start-up objects out of the garbage collector's sight, as vLLM's own server does:
    full collections then skip vLLM's, the tokenizer's and the server's long-lived objects
    (one during a 358-request batch otherwise stalls the front end for tenths of a second)."""
    from vllm.utils.gc_utils import freeze_gc_heap

    freeze_gc_heap()


def load_tokenizer(path):
    """The model folder's tokenizer (Hugging Face)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


class EngineLifecycle:
    """One AsyncLLM with its tokenizer, start-up, status and shutdown.

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
        self.max_model_len = config.max_model_len or 0  # vLLM's figure once built
        self._llm = None
        self._status = EngineStatus("idle", "not started")
        self._started = 0.0
        self._ended_by: Exception | None = None  # what ended the requests in flight, if any

    # ---- status ----------------------------------------------------------------------
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
    async def startup_phase(self, name: str, phase: str, message: str):
        """Time one start-up phase; the status shows it live and keeps its seconds."""
        began = time.perf_counter()
        self._set(phase, message, phase_started=time.time())
        yield
        took = round(time.perf_counter() - began, 1)
        self._status = replace(
            self._status, startup_phases=(*self._status.startup_phases, (name, took))
        )

    def report(self, message: str, progress: float | None) -> None:
        """A progress line within the current phase."""
        self._set(self._status.phase, message, progress)

    # ---- start -----------------------------------------------------------------------
    async def start(self) -> None:
        """Resolve the model, build vLLM, warm up; then ready."""
        from engine.warmup import warm_up

        self._started = time.perf_counter()
        try:
            await self._build()
            await warm_up(self)
            if self.before_ready:
                async with self.startup_phase("api", "loading", "building the HTTP API's state"):
                    for hook in self.before_ready:
                        await hook(self)
            _freeze_startup_heap()
        except BaseException as err:
            if self._status.phase != "stopped":
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

        async with self.startup_phase("model", "loading", f"resolving model {self.config.model}"):
            self.model = await asyncio.to_thread(resolve_model, self.config.model, progress)
        vllm_args.prepare_environment(self.config)
        # vLLM's first-start model inspection imports vLLM in a process of its own: run it
        # now, beside this process's import, rather than after it.
        side = modelinfo.start(self.model.path)
        async with self.startup_phase("import", "loading", "importing vLLM"):
            AsyncLLM, vllm_version = await asyncio.to_thread(_import_vllm)
        from engine.devices import placement, runs_on_cpu

        engine_message = "starting vLLM: load weights, capture CUDA graphs"
        if runs_on_cpu():
            engine_message = "starting vLLM on the CPU: load weights, allocate the KV cache"
        async with self.startup_phase("engine", "loading", engine_message):
            await asyncio.to_thread(modelinfo.wait, side, MODELINFO_TIMEOUT_S)
            args = vllm_args.async_engine_args(self.config, self.model)
            build = functools.partial(
                AsyncLLM.from_engine_args, args, stat_loggers=[stat_logger(self.counters)]
            )
            self._llm = await self._with_remote_ranks(build)
            self.tokenizer = await asyncio.to_thread(load_tokenizer, self.model.path)
        self.max_model_len = self._llm.model_config.max_model_len
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
                **placement(self.config),
                "vllm": vllm_version,
                "profile": self.config.profile,
                "profile_reason": self.config.profile_reason,
                "max_model_len": self.max_model_len,
                "thinking": self.thinking,
            },
        )

    async def _with_remote_ranks(self, build):
        """Build the AsyncLLM (in a daemon thread: a shutdown does not wait for a build it
        ends); with ranks on other hosts, wait for them at most the configured time (vLLM
        itself would wait forever) and say what to start there."""
        remote = self.config.remote_ranks
        if not remote:
            return await run_in_daemon_thread(build)
        where = f"{self.config.data_parallel_address}:{self.config.data_parallel_rpc_port}"
        self._set(
            "loading",
            f"starting {self.config.local_ranks} rank(s) here and waiting for {remote} on other "
            f"hosts to join at {where}",
        )
        timeout = self.config.data_parallel_join_timeout
        try:
            return await asyncio.wait_for(run_in_daemon_thread(build), timeout)
        except TimeoutError:
            await asyncio.to_thread(stop_engine_processes)
            raise EngineUnavailable(
                f"the {remote} data-parallel rank(s) on other hosts did not join {where} within "
                f"{timeout:.0f} s; start them there with `python -m engine.rank` and the same "
                "engine flags (README: several hosts), then restart"
            ) from None

    # ---- health ----------------------------------------------------------------------
    def dead_reason(self) -> str | None:
        """Why the engine died, or None while it lives (or has not started)."""
        if self._llm is None or not self._llm.errored:
            return None
        return f"engine process died ({type(self._llm.dead_error).__name__})"

    def mark_failed(self, reason: str) -> None:
        self._set("failed", reason, error=reason)

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down (requests in flight were ended for it)."""
        return isinstance(self._ended_by, ServerStopping)

    def stop_requests(self, error: Exception) -> None:
        """End every request in flight with `error` (a 503 over vLLM's HTTP API), before a
        restart or a shutdown: shutting down alone ends them with a quiet 'abort' finish,
        which a client takes for a complete reply. Later requests are refused with it too."""
        self._ended_by = error
        llm = self._llm
        if llm is None or llm.errored:
            return  # a dead engine has already failed its requests
        from vllm.exceptions import GracefulHTTPError

        llm.output_processor.propagate_error(
            GracefulHTTPError(str(error), HTTPStatus.SERVICE_UNAVAILABLE)
        )

    def unfinished_requests(self) -> int:
        """Requests vLLM still tracks (running, waiting or being aborted)."""
        if self._llm is None:
            return 0
        return self._llm.output_processor.get_num_unfinished_requests()

    # ---- shutdown --------------------------------------------------------------------
    async def close(self) -> None:
        """Stop vLLM and its processes; the engine is unusable afterwards.

        vLLM's output handler is stopped first: vLLM's own shutdown ends the engine processes
        before it cancels that handler, which then reads their end as a dead engine and logs
        an EngineDeadError (and with a stop signal sent to the whole process group, the
        engine processes are already on their way out).
        """
        llm = self._llm
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
            if self._ended_by is None:  # nothing delivers their outputs now
                self.stop_requests(EngineUnavailable("the engine was shut down"))
        self._llm = None
        if llm is not None:  # vLLM kills engine processes still there after the timeout
            await asyncio.to_thread(llm.shutdown, SHUTDOWN_TIMEOUT_S)
        if self._status.phase != "failed":
            self._set("stopped", "engine shut down")
