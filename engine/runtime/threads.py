"""A build that may never return, run in a daemon thread: the process's exit does not wait for
it (vLLM's engine build blocks until its engine cores answer, and a stop may end them first).
"""

from __future__ import annotations

import asyncio
import threading


def in_daemon_thread(work, future: asyncio.Future) -> None:
    """Run `work()` in a daemon thread (it may never return; exit does not wait for it) and
    settle `future` with its result or error."""
    loop = future.get_loop()

    def settle(outcome, failed: bool) -> None:
        if not future.done():
            future.set_exception(outcome) if failed else future.set_result(outcome)

    def run() -> None:
        try:
            outcome, failed = work(), False
        except BaseException as err:  # noqa: BLE001  (handed to the waiting coroutine)
            outcome, failed = err, True
        try:
            loop.call_soon_threadsafe(settle, outcome, failed)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name="engine-build", daemon=True).start()


async def run_in_daemon_thread(work):
    """Await `work()` run in a daemon thread."""
    future = asyncio.get_running_loop().create_future()
    in_daemon_thread(work, future)
    return await future
