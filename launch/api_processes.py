"""The API processes beside the main one (`--api-processes N`): started on each new engine,
replaced when one dies, stopped before the engine is.

With N above 1 the main process starts vLLM's engine core with a slot per API process
(`engine.runtime.slots`), takes slot 0 itself, and, once its engine is warm, starts N - 1
processes (`launch.api_process`) on the next slots. All of them accept on the API port's one
listening socket, so the kernel deals the connections out between them; each has a private
Unix socket for the UI workers' chats. Every API process does its own requests' per-token
work: vLLM's output handling and detokenizing, the OpenAI API's events, the UI's reply lines.

A process that dies is replaced on a spare slot (a dead client's slot cannot be used again:
`engine.runtime.slots`); the other processes' streams go on. Its requests still in the engine
run to their end there (vLLM 0.32 has no way for another client to abort them). A restart of
the engine, or the app's stop, stops them first (SIGTERM: their replies in flight end with "the
server is shutting down"), then the engine.

    processes = ApiProcesses(count, spec_for)   # spec_for(position, engine, slot) -> spec
    service.before_ready.append(processes.start_for)
    service.before_close.append(processes.stop)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from contextlib import suppress

from launch.api_process import READY_TIMEOUT_S, ApiProcessSpec, run
from launch.processes import keep

WATCH_SECONDS = 0.5
STOP_TIMEOUT_S = 8.0


class ApiProcesses:
    """API processes 1 .. count-1 of the current engine."""

    def __init__(self, count: int, spec_for: Callable[..., ApiProcessSpec], admissions=None):
        self.count = count
        self.spec_for = spec_for
        self.admissions = admissions  # the shared admission count (engine.runtime.admissions)
        self.processes: dict[int, multiprocessing.Process] = {}  # position -> process
        self.slots: dict[int, int] = {}  # position -> its process's slot
        self._engine = None
        self._watch: asyncio.Task | None = None
        self._context = multiprocessing.get_context("spawn")

    async def start_for(self, engine) -> None:
        """Start the API processes on `engine`'s slots and wait until each serves (a hook
        run before the engine says ready)."""
        if self.count <= 1:
            return
        self._engine = engine
        engine.life.report(f"starting {self.count - 1} more API process(es)", None)
        waiting = [self._start(position, engine) for position in range(1, self.count)]
        phases = await asyncio.gather(*(asyncio.to_thread(_answer, w) for w in waiting))
        failed = [p for p in phases if p != "ready"]
        if failed:
            await self.stop(engine)
            raise RuntimeError(f"an API process did not start: {failed[0]}")
        print(f"[api] {self.count} API processes serve (this one and {self.count - 1} more)")
        self._watch = asyncio.create_task(self._replace_dead(engine))

    def _start(self, position: int, engine):
        """Start the process for `position` on the engine's next free slot; returns the pipe
        end that says when it serves (None: no slot left)."""
        slots = engine.life.slots
        slot = slots.take() if slots is not None else None
        if slot is None:
            return None
        answer, ready = self._context.Pipe(duplex=False)
        spec = self.spec_for(position, engine, slot)
        process = self._context.Process(
            target=run, args=(spec, ready), name=f"api-process-{position}", daemon=False
        )
        process.start()
        keep(process.pid)
        ready.close()
        slots.release_listeners(slot)  # the process holds its own copies now
        self.processes[position] = process
        self.slots[position] = slot.index
        return answer

    async def _replace_dead(self, engine) -> None:
        """Replace an API process that dies, on a spare slot, while this engine lives."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            for position, process in list(self.processes.items()):
                if process.is_alive():
                    continue
                code = process.exitcode
                if self.admissions is not None:  # the room its requests held is free again
                    self.admissions.clear(self.slots[position])
                waiting = self._start(position, engine)
                if waiting is None:
                    del self.processes[position]
                    print(
                        f"[api] API process {position} ended (exit {code}); no spare slot "
                        "left: the others serve until the engine restarts",
                        flush=True,
                    )
                    continue
                phase = await asyncio.to_thread(_answer, waiting)
                print(
                    f"[api] API process {position} ended (exit {code}); replaced: {phase}",
                    flush=True,
                )

    async def stop(self, engine=None) -> None:
        """Stop every API process (SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`); a hook run
        before an engine is closed."""
        if self._watch is not None:
            self._watch.cancel()
            with suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        processes, self.processes = list(self.processes.values()), {}
        await asyncio.to_thread(_stop_all, processes)


def _answer(answer) -> str:
    """What a starting API process says: "ready", or why it failed."""
    if answer is None:
        return "no free slot"
    try:
        if answer.poll(READY_TIMEOUT_S + 30):
            return answer.recv()
        return "no answer"
    except (EOFError, OSError):
        return "exited before it served"
    finally:
        answer.close()


def _stop_all(processes: list) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(2)
