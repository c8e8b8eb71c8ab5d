"""How a benchmark's batch reaches vLLM: the submit modes that `--batch-submit` compares.

- `hold` (the default, and what `/predict` does): every request added while vLLM's scheduler is
  held, so the engine's first step holds the whole batch;
- `direct`: added one after another while the engine runs;
- `legacy`: each request submitted on its own, concurrently, as the original system's batch
  server did (one call per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import replace

from engine import Completion, Engine, GenerationParams
from engine.runtime.engine import Admission

SUBMIT_MODES = ("hold", "direct", "legacy")


async def submit_batch(
    engine: Engine,
    prompts: Sequence[list[int]],
    params: Sequence[GenerationParams],
    mode: str = "hold",
    prefix: str = "bench",
    admitted: Admission | None = None,
) -> AsyncIterator[Completion]:
    """Each request of the batch as it finishes (completion order), submitted the `mode` way.
    `admitted`: the room the caller already holds for the batch (else it is admitted here)."""
    if mode not in SUBMIT_MODES:
        raise ValueError(f"submit mode must be one of {', '.join(SUBMIT_MODES)}, got {mode!r}")
    if mode != "legacy":
        batch = engine.generate_many(
            prompts, params, request_prefix=prefix, hold=mode == "hold", admitted=admitted
        )
        async with aclosing(batch) as completions:
            async for done in completions:
                yield done
        return
    with engine.admitted(admitted, len(prompts)) as held:
        async with aclosing(_one_by_one(engine, prompts, params, prefix, held)) as completions:
            async for done in completions:
                yield done


async def _one_by_one(
    engine: Engine, prompts, params, prefix: str, admitted: Admission
) -> AsyncIterator[Completion]:
    """The `legacy` mode: one `generate_many` call per request, all at once, in the batch's
    admission."""
    finished: asyncio.Queue = asyncio.Queue()

    async def one(i: int) -> None:
        try:
            async for done in engine.generate_many(
                [prompts[i]],
                [params[i]],
                request_prefix=f"{prefix}-{i}",
                hold=False,
                admitted=admitted,
            ):
                finished.put_nowait(replace(done, index=i))
        except Exception as err:  # handed to the consumer below
            finished.put_nowait(err)

    tasks = [asyncio.create_task(one(i)) for i in range(len(prompts))]
    try:
        for _ in prompts:
            item = await finished.get()
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
