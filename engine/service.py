"""The engine as a service for other threads: its own event loop, status, restart, relays.

Gradio, the HTTP API and the command-line benchmark each run their own event loop; the engine
runs on one loop of its own (`engine-loop` thread). Calls hop over with `call` (a coroutine's
result) and `relay` (an async generator's items); cancelling the caller cancels the work on the
engine loop, which aborts its requests in vLLM.

    service = EngineService(config); service.start()
    async for chunk in service.stream_chat(messages, params): ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress

from engine.chat import answer_text, render_prompt
from engine.config import EngineConfig
from engine.engine import BeforeReady, Chunk, Engine, EngineStatus, GenerationParams

WATCH_SECONDS = 0.5


class EngineService:
    """Owns the engine loop thread and the current Engine; restarts it if it dies."""

    def __init__(self, config: EngineConfig, auto_restart: bool = True):
        self.config = config
        self.auto_restart = auto_restart
        # Coroutines run on every new engine before it says ready (see `Engine`); add them
        # before `start()`.
        self.before_ready: list[BeforeReady] = []
        self.engine = Engine(config, self.before_ready)
        self.restarts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="engine-loop", daemon=True
        )
        self._boot_future: concurrent.futures.Future | None = None
        self._closing = False

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine in the background; `status()` tells how far it got."""
        self._thread.start()
        self._boot_future = self.submit(self._boot())
        self.submit(self._watch())

    async def _boot(self) -> None:
        with suppress(Exception):  # the failure is in the status; the web server keeps going
            await self.engine.start()

    async def _watch(self) -> None:
        """Notice a dead engine process, say so, and bring up a new engine if allowed."""
        while not self._closing:
            await asyncio.sleep(WATCH_SECONDS)
            reason = self.engine.dead_reason()
            if reason and self.engine.status.phase != "failed":
                self.engine.mark_failed(reason)
            if reason and self.auto_restart and not self._closing:
                await self._restart(f"{reason}; restarting")

    async def _restart(self, why: str) -> None:
        old = self.engine
        old.mark_failed(why)
        old.fail_unfinished(why)
        with suppress(Exception):
            await old.close()
        self.restarts += 1
        self.engine = Engine(self.config, self.before_ready)
        await self._boot()

    def restart(self) -> concurrent.futures.Future:
        """Replace the engine with a fresh one (the web servers stay up)."""
        return self.submit(self._restart("restart requested"))

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

    def shutdown(self) -> None:
        """Stop the engine and its processes, then the loop thread."""
        self._closing = True
        if self._thread.is_alive():
            with suppress(Exception):
                self.submit(self.engine.close()).result(timeout=60)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        else:
            self.engine.shutdown()

    # ---- crossing threads ------------------------------------------------------------
    def submit(self, coro: Awaitable) -> concurrent.futures.Future:
        """Run a coroutine on the engine loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def call(self, make: Callable[[Engine], Awaitable]):
        """Await `make(engine)` on the engine loop from any other loop."""
        future = self.submit(make(self.engine))
        try:
            return await asyncio.wrap_future(future)
        finally:
            future.cancel()

    async def relay(self, make: Callable[[Engine], AsyncIterator]) -> AsyncIterator:
        """Iterate `make(engine)` on the engine loop, yielding its items on the caller's loop.

        Leaving early (break, cancellation, a closed browser tab) cancels the producer there.
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

    # ---- conveniences for the UI and the HTTP API ------------------------------------
    def stream_chat(
        self, messages: list[dict], params: GenerationParams, thinking: bool = True
    ) -> AsyncIterator[Chunk]:
        """Stream the reply to a chat (messages already include the system prompt)."""

        def make(engine: Engine) -> AsyncIterator[Chunk]:
            engine.require_ready()
            ids = engine.encode(render_prompt(engine.tokenizer, messages, thinking))
            return engine.stream(ids, params)

        return self.relay(make)

    async def answer_all(
        self, questions: list[str], params: GenerationParams, thinking: bool | None = None
    ) -> list[str]:
        """One answer per question, in order; the whole list goes to the engine as one batch.

        `thinking` None: the engine's course-prompt setting (the course's ChatML for its
        fine-tuned model, Qwen3's empty think block for the stock model).
        """

        async def run(engine: Engine) -> list[str]:
            engine.require_ready()
            prompts = [engine.chat_prompt(q, thinking=thinking) for q in questions]
            answers = [""] * len(prompts)
            async for done in engine.generate_many(
                prompts, [params] * len(prompts), request_prefix="predict"
            ):
                answers[done.index] = answer_text(done.text)
            return answers

        return await self.call(run)

    def engine_load(self) -> dict:
        """Requests in flight and the scheduler's last view, for tests and status pages."""
        c = self.engine.counters
        return {
            "unfinished": self.engine.unfinished_requests(),
            "running": c.running,
            "waiting": c.waiting,
            "generated_tokens": c.generated_tokens,
        }
