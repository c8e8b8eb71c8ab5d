"""The start-up warm-up: what users will send, sent once before the engine says ready.

1. The benchmark's shape: one greedy batch of `warmup_batch` requests (358, the course's batch),
   held so that the engine's first step holds them all.
2. Sampled decoding at the chat's and the OpenAI API's defaults (Qwen3's recommended top-k 20 /
   top-p 0.95; and top-p alone): on a GPU, one batch of every size class from 1 to
   `max_num_seqs` on every data-parallel rank. vLLM's Triton top-k/top-p kernels compile
   once per class (the top-p pipeline splits each row over 32, 16, ... 1 programs by batch
   size), so without this the first users' replies wait for a compiler, and vLLM's JIT
   monitor logs "Triton kernel JIT compilation during inference". On the CPU (no Triton) one
   sampled batch suffices.
3. One streamed reply, through the same path the chat uses.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from engine.qwen3.prompt import THINKING_DEFAULTS
from engine.types import GREEDY, GenerationParams

WARMUP_QUESTION = "CUDA中矩阵乘法算子如何利用共享内存减少全局内存访问？请结合线程块说明。"
SAMPLED = GenerationParams(
    max_new_tokens=2,
    temperature=THINKING_DEFAULTS.temperature,
    top_p=THINKING_DEFAULTS.top_p,
    top_k=THINKING_DEFAULTS.top_k,
    ignore_eos=True,
)
TOP_P_ONLY = replace(SAMPLED, top_k=-1)


class Warmable(Protocol):
    """What the warm-up needs of the engine object (which imports this module)."""

    config: Any

    def startup_phase(self, name: str, phase: str, message: str) -> Any: ...
    def report(self, message: str, progress: float | None) -> None: ...
    def chat_prompt(self, question: str, thinking: bool | None = None) -> list[int]: ...
    def stream(self, prompt_ids: list[int], params: GenerationParams, **kw) -> Any: ...
    def generate_many(self, prompts, params, **kw) -> Any: ...


def size_classes(max_num_seqs: int) -> list[int]:
    """Batch sizes that reach every compiled variant: powers of two up to the maximum, and it."""
    sizes, size = [], 1
    while size < max_num_seqs:
        sizes.append(size)
        size *= 2
    return [*sizes, max_num_seqs]


async def warm_up(engine: Warmable) -> None:
    """Run the warm-up on a built engine, the status showing how far it got."""
    from engine.settings.devices import runs_on_cpu

    config = engine.config
    limit = config.admission_limit
    ranks = config.data_parallel_size
    sampled = [(ranks, SAMPLED)]
    if not runs_on_cpu():
        per_rank = [s for s in size_classes(config.max_num_seqs) if s * ranks <= limit]
        sampled = [(s * ranks, p) for p in (SAMPLED, TOP_P_ONLY) for s in per_rank]
    batch = min(config.warmup_batch, limit)
    steps = (1 if batch else 0) + len(sampled) + 1
    async with engine.startup_phase("warm-up", "warming", f"warm-up: {steps} steps"):
        done = 0
        if batch:
            greedy = replace(GREEDY, max_new_tokens=config.warmup_tokens, ignore_eos=True)
            await _batch(engine, batch, greedy)
            done += 1
            engine.report(f"warm-up: the benchmark's batch of {batch} done", done / steps)
        for count, params in sampled:
            await _batch(engine, count, params)
            done += 1
            engine.report(f"warm-up: sampled batch of {count} done", done / steps)
        prompt = engine.chat_prompt(WARMUP_QUESTION, thinking=True)
        async for _ in engine.stream(prompt, SAMPLED, ready=False):
            pass
        engine.report("warm-up: a streamed reply done", 1.0)


async def _batch(engine: Warmable, count: int, params: GenerationParams) -> None:
    prompts = [engine.chat_prompt(f"{WARMUP_QUESTION} ({i})") for i in range(count)]
    async for _ in engine.generate_many(
        prompts, [params] * count, decode=False, ready=False, request_prefix="warmup"
    ):
        pass
