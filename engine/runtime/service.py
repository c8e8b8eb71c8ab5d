"""The engine as a service: its own event-loop thread, a watchdog, restarts and a clean stop.

The engine runs on one loop of its own (`engine-loop` thread); the HTTP server runs on the
same loop, and other threads hop over with `submit` (a coroutine, as a thread-safe future) and
`relay` (an async generator's items, on the caller's loop); cancelling either cancels the work
on the engine loop, which aborts its requests in vLLM.

    service = EngineService(config); service.start()
    service.stop()        # requests in flight end with "the server is shutting down"
    service.shutdown()    # then the engine and its processes

A dead engine process is noticed and a new engine built in its place (`auto_restart`), unless
the server is stopping: engine processes that end because the whole process group got Ctrl-C
or SIGTERM are a stop, not a crash. Restarts are serialized: asking again while one is under
way waits for that one, and a stop cancels it and ends the processes it started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress

import uvloop

from engine.models.sources import ResolvedModel
from engine.runtime.admissions import SharedCount, SharedCounts
from engine.runtime.engine import BeforeReady, Engine
from engine.runtime.slots import SPARE_SLOTS, Slot
from engine.settings.config import EngineConfig
from engine.types import EngineStatus, EngineUnavailable, ServerStopping
from launch.processes import stop_engine_processes

WATCH_SECONDS = 0.5
# A dead engine is restarted only if no stop arrives within this time: a stop signal sent to
# the whole process group reaches the engine's processes and this one at the same moment.
STOP_GRACE_SECONDS = 1.5


class EngineService:
    """Owns the engine loop thread and the current Engine; restarts it if it dies."""

    def __init__(
        self,
        config: EngineConfig,
        auto_restart: bool = True,
        attach: Slot | None = None,
        model: ResolvedModel | None = None,
        admissions=None,
    ):
        self.config = config
        self.auto_restart = auto_restart and attach is None
        self.attach = attach  # an API process: a client of the main process's engine core
        # The admission count shared by the API processes (an entry per slot), made here in
        # the main process, handed to the API processes (`admissions`) with their slots.
        self.admissions = admissions
        if admissions is None and config.api_processes > 1:
            self.admissions = SharedCounts(config.api_processes + SPARE_SLOTS)
        # Coroutines run on every new engine before it says ready (see `Engine.start`), and on
        # an engine about to be closed (a restart, the shutdown); add them before `start()`.
        self.before_ready: list[BeforeReady] = []
        self.before_close: list[BeforeReady] = []
        self.engine = self._new_engine(attach, model)
        self.restarts = 0
        self.closing = False
        # uvloop, as `vllm serve` runs its server: every streamed event crosses this loop.
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="engine-loop", daemon=True
        )
        self._booting: asyncio.Task | None = None
        self._restarting: asyncio.Task | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine in the background; `status()` tells how far it got."""
        self._thread.start()
        self.submit(self._first_boot())
        self.submit(self._watch())

    async def _first_boot(self) -> None:
        self._booting = asyncio.current_task()
        await self._boot(self.engine)

    async def _boot(self, engine: Engine) -> None:
        with suppress(Exception):  # the failure is in the status; the web server keeps going
            await engine.start()

    async def _watch(self) -> None:
        """Notice a dead engine process, say so, and bring up a new engine if allowed."""
        while not self.closing:
            await asyncio.sleep(WATCH_SECONDS)
            engine = self.engine
            reason = engine.dead_reason()
            if not reason or engine.status.phase == "failed" or self._restart_running():
                continue
            await asyncio.sleep(STOP_GRACE_SECONDS)
            if self.closing or engine is not self.engine:
                return
            engine.mark_failed(reason)
            if self.auto_restart:
                await self._request_restart(f"{reason}; restarting")

    def _restart_running(self) -> bool:
        return self._restarting is not None and not self._restarting.done()

    async def _request_restart(self, why: str) -> None:
        """Start a restart, or wait for the one under way."""
        if self.closing:
            raise ServerStopping()
        if self.attach is not None:
            raise EngineUnavailable("an API process cannot restart the engine; the app can")
        if not self._restart_running():
            self._restarting = asyncio.create_task(self._restart(why))
        await asyncio.shield(self._restarting)

    async def _restart(self, why: str) -> None:
        old = self.engine
        old.mark_failed(why)
        old.stop_requests(EngineUnavailable(f"engine restarting ({why}); try again shortly"))
        await self._before_close(old)
        with suppress(Exception):
            await old.close()
        if self.closing:
            return
        self.restarts += 1
        self.engine = self._new_engine()
        await self._boot(self.engine)

    def _new_engine(self, attach: Slot | None = None, model=None) -> Engine:
        """An engine (not started) counting its admissions in this process's entry."""
        count = None
        if self.admissions is not None:
            if attach is None:  # the main process's new engine: nobody holds room yet
                self.admissions.clear()
            count = SharedCount(self.admissions, attach.index if attach else 0)
        return Engine(self.config, self.before_ready, attach, model, count)

    def restart(self) -> concurrent.futures.Future:
        """Replace the engine with a fresh one (the web servers stay up); a restart asked for
        while one is under way is that same restart."""
        return self.submit(self._request_restart("restart requested"))

    def wait_ready(self, timeout: float | None = None) -> EngineStatus:
        """Block until the engine is ready or failed (or the timeout passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if status.phase in ("ready", "failed", "stopped"):
                return status
            if deadline is not None and time.monotonic() > deadline:
                return status
            time.sleep(0.2)

    def status(self) -> EngineStatus:
        return self.engine.status

    # ---- stopping --------------------------------------------------------------------
    def stop(self) -> None:
        """Begin a stop (from any thread, a signal handler included): no restart from now on,
        requests in flight end with "the server is shutting down", new ones are refused."""
        self.closing = True
        if self._thread.is_alive():
            with suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._stop_on_loop)

    def _stop_on_loop(self) -> None:
        for task in (self._restarting, self._booting):
            if task is not None and not task.done():
                task.cancel()
        self.engine.stop_requests(ServerStopping())

    def shutdown(self, timeout: float = 30) -> None:
        """Stop the engine and its processes, then the loop thread."""
        self.stop()
        if self._thread.is_alive():
            with suppress(Exception):
                self.submit(self._before_close(self.engine)).result(timeout=timeout)
            with suppress(Exception):
                self.submit(self.engine.close()).result(timeout=timeout)
            with suppress(Exception):
                self.submit(self._cancel_tasks()).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        # Whatever vLLM left: processes of a build that a stop cut short, or of a shutdown
        # that did not finish in time.
        stop_engine_processes(timeout=5)
        if self.admissions is not None and self.attach is None:
            with suppress(OSError):
                os.unlink(self.admissions.lock_path)

    async def _before_close(self, engine: Engine) -> None:
        for hook in self.before_close:
            with suppress(Exception):
                await hook(engine)

    async def _cancel_tasks(self) -> None:
        """Cancel what still runs on the loop (the watchdog, servers' leftovers) before it stops."""
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- crossing threads ------------------------------------------------------------
    def submit(self, coro: Awaitable) -> concurrent.futures.Future:
        """Run a coroutine on the engine loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def relay(self, make: Callable[[Engine], AsyncIterator]) -> AsyncIterator:
        """Iterate `make(engine)` on the engine loop, yielding its items on the caller's loop.

        Leaving early (break, cancellation) cancels the producer there.
        """
        caller = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()

        def put(kind: str, value) -> None:
            with suppress(RuntimeError):  # caller loop already closed
                caller.call_soon_threadsafe(items.put_nowait, (kind, value))

        async def pump() -> None:
            try:
                async for item in make(self.engine):
                    put("item", item)
            except asyncio.CancelledError:
                raise
            except BaseException as err:
                put("error", err)
            else:
                put("end", None)

        future = self.submit(pump())
        try:
            while True:
                kind, value = await items.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            if not future.done():
                future.cancel()
                with suppress(BaseException):
                    await asyncio.wait_for(asyncio.wrap_future(future), timeout=10)

    def engine_load(self) -> dict:
        """Requests in flight and the scheduler's last view, for tests and status pages."""
        c = self.engine.counters
        return {
            "unfinished": self.engine.unfinished_requests(),
            "running": c.running,
            "waiting": c.waiting,
            "generated_tokens": c.generated_tokens,
            "admission_limit": self.config.admission_limit,
        }
