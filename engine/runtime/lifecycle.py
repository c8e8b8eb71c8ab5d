"""The engine's life: build (model, vLLM import, AsyncLLM), status, health, shutdown.

`Lifecycle` owns one vLLM `AsyncLLM` on one asyncio loop; the engine object
(`engine.runtime.engine.Engine`) holds one and drives its start (build, warm-up, the hooks that
run before ready). Each phase (model, import, engine, warm-up, api) shows in `status` with its
seconds; `stop_requests` ends the requests in flight with a clear error before a shutdown or a
restart, so that no client takes a cut-off reply for a whole one.
"""

from __future__ import annotations

import asyncio
import functools
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from http import HTTPStatus

from engine.models import modelinfo
from engine.models.sources import ResolvedModel, resolve_model
from engine.qwen3.prompt import resolve_thinking
from engine.runtime import vllm_args
from engine.runtime.slots import SPARE_SLOTS, EngineSlots, Slot
from engine.runtime.stats import Counters, stat_logger
from engine.runtime.threads import run_in_daemon_thread
from engine.settings.config import EngineConfig
from engine.types import EngineStatus, EngineUnavailable, ServerStopping
from launch.processes import stop_engine_processes

MODELINFO_TIMEOUT_S = 120  # the side inspection of the model class (engine.models.modelinfo)
SHUTDOWN_TIMEOUT_S = 5.0  # an engine process's own clean exit, before it is killed


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


def _engine_config(args, clients: int, rank: int):
    """vLLM's config for an engine core served by `clients` API processes, as this process
    (`rank`; -1: the process that starts the engine core) sees it."""
    from vllm.usage.usage_lib import UsageContext

    args._api_process_count, args._api_process_rank = clients, rank
    return args.create_engine_config(UsageContext.OPENAI_API_SERVER)


class Lifecycle:
    """One AsyncLLM with its tokenizer: build, status, health and shutdown.

    Three ways to build it: vLLM starts its own engine core (one API process, the default);
    this process starts the engine core with a slot per API process and takes slot 0
    (`config.api_processes` above 1, `engine.runtime.slots`); or, in an API process, a client
    on a slot that the app's main process handed over (`attach`: the engine core runs
    already, warm)."""

    def __init__(
        self, config: EngineConfig, attach: Slot | None = None, model: ResolvedModel | None = None
    ):
        self.config = config
        self.attach = attach  # an API process's slot at an engine core that runs already
        self.slots: EngineSlots | None = None  # the engine core's slots, where this started it
        self.counters = Counters()
        self.model: ResolvedModel | None = model
        self.tokenizer = None
        self.thinking = config.thinking  # the course prompt's thinking setting, once built
        self.max_model_len = config.max_model_len or 0  # vLLM's figure once built
        self.llm = None  # vLLM's AsyncLLM once built
        self.status = EngineStatus("idle", "not started")
        self.ended_by: Exception | None = None  # what ended the requests in flight, if any
        self._started = 0.0

    # ---- status ----------------------------------------------------------------------
    def _set(self, phase: str, message: str, progress: float | None = None, **kw) -> None:
        self.status = replace(self.status, phase=phase, message=message, progress=progress, **kw)
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
        self.status = replace(
            self.status, startup_phases=(*self.status.startup_phases, (name, took))
        )

    def report(self, message: str, progress: float | None) -> None:
        """A progress line within the current phase."""
        self._set(self.status.phase, message, progress)

    def began(self) -> None:
        """A start begins (its seconds count from here)."""
        self._started = time.perf_counter()

    def ready(self) -> None:
        """The start is done: say ready, with its seconds per phase."""
        _freeze_startup_heap()
        seconds = time.perf_counter() - self._started
        self.status = replace(self.status, startup_seconds=round(seconds, 1))
        phases = self.status.phases_text
        self._set("ready", f"ready in {seconds:.0f} s ({phases})", phase_started=None)

    def start_failed(self, err: BaseException) -> None:
        """The start failed with `err` (unless a stop ended it): say so."""
        if self.status.phase != "stopped":
            reason = f"{type(err).__name__}: {err}"
            self._set("failed", f"start failed: {reason}", error=reason)

    # ---- build -----------------------------------------------------------------------
    async def build(self) -> None:
        """Resolve the model, import vLLM and build its AsyncLLM and the tokenizer."""
        loop = asyncio.get_running_loop()

        def progress(message: str, fraction: float | None) -> None:
            loop.call_soon_threadsafe(self._set, "loading", message, fraction)

        if self.attach is None:
            message = f"resolving model {self.config.model}"
            async with self.startup_phase("model", "loading", message):
                self.model = await asyncio.to_thread(resolve_model, self.config.model, progress)
        vllm_args.prepare_environment(self.config)
        # vLLM's first-start model inspection imports vLLM in a process of its own: run it
        # now, beside this process's import, rather than after it (an API process's engine
        # core is up: its inspection is done).
        side = None if self.attach else modelinfo.start(self.model.path)
        async with self.startup_phase("import", "loading", "importing vLLM"):
            AsyncLLM, vllm_version = await asyncio.to_thread(_import_vllm)
        from engine.settings.devices import placement, runs_on_cpu

        engine_message = "starting vLLM: load weights, capture CUDA graphs"
        if runs_on_cpu():
            engine_message = "starting vLLM on the CPU: load weights, allocate the KV cache"
        async with self.startup_phase("engine", "loading", engine_message):
            if side is not None:
                await asyncio.to_thread(modelinfo.wait, side, MODELINFO_TIMEOUT_S)
            args = vllm_args.async_engine_args(self.config, self.model)
            loggers = [stat_logger(self.counters)]
            if self.attach is not None:
                build = functools.partial(self._client, AsyncLLM, args, loggers, self.attach)
            elif self.config.api_processes > 1:
                build = functools.partial(self._with_slots, AsyncLLM, args, loggers)
            else:
                build = functools.partial(AsyncLLM.from_engine_args, args, stat_loggers=loggers)
            self.llm = await self._with_remote_ranks(build)
            self.tokenizer = await asyncio.to_thread(load_tokenizer, self.model.path)
        self.max_model_len = self.llm.model_config.max_model_len
        self.thinking = resolve_thinking(
            self.config.thinking, self.config.model, self.model.random_weights
        )
        self.status = replace(
            self.status,
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

    def _with_slots(self, AsyncLLM, args, loggers):
        """Start the engine core with a slot per API process (and spares), then this
        process's own client on slot 0."""
        count = self.config.api_processes + SPARE_SLOTS
        vllm_config = _engine_config(args, count, -1)
        self.slots = EngineSlots.start(vllm_config, count, log_stats=not args.disable_log_stats)
        return AsyncLLM.from_vllm_config(
            vllm_config,
            stat_loggers=loggers,
            disable_log_stats=args.disable_log_stats,
            **self.slots.take().client_kwargs(),
        )

    @staticmethod
    def _client(AsyncLLM, args, loggers, slot: Slot):
        """A client on a slot of an engine core that runs already (an API process)."""
        return AsyncLLM.from_vllm_config(
            _engine_config(args, slot.count, slot.index),
            stat_loggers=loggers,
            disable_log_stats=args.disable_log_stats,
            **slot.client_kwargs(),
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
                f"{timeout:.0f} s; start them there with `python -m launch.rank` and the same "
                "engine flags (README: several hosts), then restart"
            ) from None

    # ---- health ----------------------------------------------------------------------
    def dead_reason(self) -> str | None:
        """Why the engine died, or None while it lives (or has not started)."""
        if self.llm is None:
            return None
        if self.llm.errored:
            return f"engine process died ({type(self.llm.dead_error).__name__})"
        ended = self.slots.dead() if self.slots is not None else None
        return f"engine process died ({ended} ended)" if ended else None

    def mark_failed(self, reason: str) -> None:
        self._set("failed", reason, error=reason)

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down (requests in flight were ended for it)."""
        return isinstance(self.ended_by, ServerStopping)

    def stop_requests(self, error: Exception) -> None:
        """End every request in flight with `error` (a 503 over vLLM's HTTP API), before a
        restart or a shutdown: shutting down alone ends them with a quiet 'abort' finish,
        which a client takes for a complete reply. Later requests are refused with it too."""
        self.ended_by = error
        llm = self.llm
        if llm is None or llm.errored:
            return  # a dead engine has already failed its requests
        from vllm.exceptions import GracefulHTTPError

        llm.output_processor.propagate_error(
            GracefulHTTPError(str(error), HTTPStatus.SERVICE_UNAVAILABLE)
        )

    def unfinished_requests(self) -> int:
        """Requests vLLM still tracks (running, waiting or being aborted)."""
        if self.llm is None:
            return 0
        return self.llm.output_processor.get_num_unfinished_requests()

    # ---- shutdown --------------------------------------------------------------------
    async def close(self) -> None:
        """Stop vLLM and its processes; the engine is unusable afterwards.

        vLLM's output handler is stopped first: vLLM's own shutdown ends the engine processes
        before it cancels that handler, which then reads their end as a dead engine and logs
        an EngineDeadError (and with a stop signal sent to the whole process group, the
        engine processes are already on their way out).
        """
        llm = self.llm
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
            if self.ended_by is None:  # nothing delivers their outputs now
                self.stop_requests(EngineUnavailable("the engine was shut down"))
        self.llm = None
        if llm is not None:  # vLLM kills engine processes still there after the timeout
            await asyncio.to_thread(llm.shutdown, SHUTDOWN_TIMEOUT_S)
        slots, self.slots = self.slots, None
        if slots is not None:  # the engine core this process started for its API processes
            await asyncio.to_thread(slots.shutdown, SHUTDOWN_TIMEOUT_S)
        if self.status.phase != "failed":
            self._set("stopped", "engine shut down")
