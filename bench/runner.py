"""The batch-358 benchmark: build the workload, submit it at once, report progress, score.

Workloads (see BENCHMARKS.md): `answer` (greedy answers up to max_new_tokens, scored with
ROUGE-L), `replay` (each request forced to its reference answer's token length, capped),
`full` (every request forced to max_new_tokens). The runner is an async generator run on the
engine's loop: it yields `Progress` events while requests finish and a `BenchmarkResult` last.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from bench.metrics import mean, percentile, rouge_l_f1, tokens_per_second
from engine import BENCH_BATCH, DEFAULT_SYSTEM_PROMPT, GREEDY, Engine, answer_text
from engine.chat import prompt_description
from eval_data import QAPair

WORKLOADS = ("answer", "replay", "full")


class BenchmarkError(ValueError):
    """A benchmark request that cannot run (bad workload, count, or data)."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """What to run: workload, how many questions, generation budget, prompt style."""

    workload: str = "answer"
    limit: int = BENCH_BATCH
    max_new_tokens: int = 256
    thinking: bool | None = None  # None: the engine's course-prompt setting for its model
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    question_set: str = "official"  # a label for reports: which questions were asked
    submit: str | None = None  # how the batch reaches vLLM (None: the engine's batch_submit)

    def validate(self, available: int) -> None:
        if self.workload not in WORKLOADS:
            raise BenchmarkError(
                f"workload must be one of {', '.join(WORKLOADS)}, got {self.workload!r}"
            )
        if not isinstance(self.limit, int) or not 1 <= self.limit <= available:
            raise BenchmarkError(
                f"number of questions must be within 1..{available}, got {self.limit!r}"
            )
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 4096:
            raise BenchmarkError(
                f"max new tokens must be within 1..4096, got {self.max_new_tokens!r}"
            )


@dataclass(frozen=True)
class Sample:
    """One question's outcome."""

    index: int
    question: str
    reference: str
    prediction: str
    rouge_l: float | None
    output_tokens: int
    prompt_tokens: int
    ttft_s: float | None
    latency_s: float


@dataclass(frozen=True)
class Progress:
    """A snapshot while the batch runs."""

    completed: int
    total: int
    output_tokens: int  # generated so far, from the engine's step counter
    elapsed_s: float
    tokens_per_second: float
    rouge_l_mean: float | None
    samples: list[Sample] = field(default_factory=list)  # finished so far, completion order


@dataclass(frozen=True)
class BenchmarkResult:
    """The final figures and every sample."""

    workload: str
    n: int
    output_tokens: int
    prompt_tokens: int
    wall_seconds: float
    tokens_per_second: float
    rouge_l_mean: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    latency_p50_s: float | None
    startup_seconds: float | None
    prompt: str  # which prompt the questions were sent with
    question_set: str
    engine_steps: int  # engine steps that ran during the run (vLLM's per-step stats)
    first_step_requests: int | None  # requests in the engine at the run's first step
    engine: dict
    samples: list[Sample]
    timeline: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def build_params(encode, pairs: list[QAPair], spec: BenchmarkSpec):
    """Per-request generation settings of a workload (all greedy); `encode`: text -> ids."""
    if spec.workload == "answer":
        return [replace(GREEDY, max_new_tokens=spec.max_new_tokens)] * len(pairs)
    if spec.workload == "full":
        return [replace(GREEDY, max_new_tokens=spec.max_new_tokens, ignore_eos=True)] * len(pairs)
    lengths = [len(encode(p.reference)) for p in pairs]
    return [
        replace(GREEDY, max_new_tokens=max(1, min(spec.max_new_tokens, n)), ignore_eos=True)
        for n in lengths
    ]


def score_answer(prediction: str, reference: str) -> float:
    """ROUGE-L of a model answer, its reasoning (if any) left out."""
    return rouge_l_f1(answer_text(prediction), reference)


async def run_benchmark(
    engine: Engine, pairs: list[QAPair], spec: BenchmarkSpec, interval: float = 0.25
) -> AsyncIterator[Progress | BenchmarkResult]:
    """Run one benchmark on `engine` (its own loop); yield Progress events, then the result."""
    spec.validate(len(pairs))
    pairs = pairs[: spec.limit]
    thinking = engine.thinking if spec.thinking is None else spec.thinking
    spec = replace(spec, thinking=bool(thinking), submit=spec.submit or engine.config.batch_submit)
    prompts = [engine.chat_prompt(p.question, spec.system_prompt, spec.thinking) for p in pairs]
    params = build_params(engine.encode, pairs, spec)
    scoring = spec.workload == "answer"
    # Scoring runs in its own process so that it never slows the engine's output handling.
    pool = (
        ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        if scoring
        else None
    )
    loop = asyncio.get_running_loop()
    if pool:  # load jieba's dictionary before the clock starts
        await loop.run_in_executor(pool, score_answer, "预热", "预热")
    samples: list[Sample] = []
    scores: dict[int, asyncio.Future] = {}
    timeline: list[dict] = []
    tokens_at_start = engine.counters.generated_tokens
    steps_before = list(engine.counters.steps)[-1:]
    start = time.perf_counter()
    last_emit, wall = start, 0.0

    def snapshot() -> Progress:
        nonlocal last_emit
        last_emit = time.perf_counter()
        now = last_emit - start
        tokens = engine.counters.generated_tokens - tokens_at_start
        scored = [s.rouge_l for s in samples if s.rouge_l is not None]
        event = Progress(
            len(samples),
            len(pairs),
            tokens,
            now,
            tokens_per_second(tokens, now),
            mean(scored),
            list(samples),
        )
        timeline.append(
            {
                "elapsed_s": round(now, 4),
                "completed": event.completed,
                "output_tokens": tokens,
                "tokens_per_second": event.tokens_per_second,
                "rouge_l_mean": event.rouge_l_mean,
            }
        )
        return event

    finished: asyncio.Queue = asyncio.Queue()

    async def collect() -> None:
        try:
            async for done in engine.generate_many(
                prompts, params, request_prefix=f"bench-{spec.workload}", submit=spec.submit
            ):
                finished.put_nowait(done)
        except Exception as err:
            finished.put_nowait(err)

    collector = asyncio.create_task(collect())
    try:
        while len(samples) < len(pairs):
            try:  # a tick every `interval` even while no request finishes (the `full` workload)
                done = await asyncio.wait_for(finished.get(), timeout=interval)
            except TimeoutError:
                yield snapshot()
                continue
            if isinstance(done, Exception):
                raise done
            wall = time.perf_counter() - start
            pair = pairs[done.index]
            if pool:
                scores[done.index] = loop.run_in_executor(
                    pool, score_answer, done.text, pair.reference
                )
            samples.append(
                Sample(
                    done.index,
                    pair.question,
                    pair.reference,
                    done.text,
                    None,
                    done.output_tokens,
                    done.prompt_tokens,
                    done.ttft_s,
                    done.latency_s,
                )
            )
            await _fill_scores(samples, scores, wait=False)
            if time.perf_counter() - last_emit >= interval:
                yield snapshot()
        await _fill_scores(samples, scores, wait=True)
        yield snapshot()
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        if pool:
            pool.shutdown(wait=False, cancel_futures=True)
    samples.sort(key=lambda s: s.index)
    yield _result(engine, spec, samples, wall, timeline, _steps_since(engine, steps_before))


def _steps_since(engine: Engine, before: list) -> list:
    """The engine steps recorded since `before` (the last step seen then, if any)."""
    steps = list(engine.counters.steps)
    if before:
        for i in range(len(steps) - 1, -1, -1):
            if steps[i] is before[0]:
                return steps[i + 1 :]
    return steps


async def _fill_scores(samples: list[Sample], scores: dict, wait: bool) -> None:
    """Copy finished ROUGE-L scores into their samples (waiting for all if asked)."""
    if wait and scores:
        await asyncio.gather(*scores.values())
    for i, sample in enumerate(samples):
        future = scores.get(sample.index)
        if sample.rouge_l is None and future is not None and future.done():
            samples[i] = replace(sample, rouge_l=future.result())


def _result(
    engine: Engine,
    spec: BenchmarkSpec,
    samples: list[Sample],
    wall: float,
    timeline: list[dict],
    steps: list,
) -> BenchmarkResult:
    output_tokens = sum(s.output_tokens for s in samples)
    ttfts = [s.ttft_s for s in samples if s.ttft_s is not None]
    scored = [s.rouge_l for s in samples if s.rouge_l is not None]
    status = engine.status
    return BenchmarkResult(
        workload=spec.workload,
        n=len(samples),
        output_tokens=output_tokens,
        prompt_tokens=sum(s.prompt_tokens for s in samples),
        wall_seconds=round(wall, 4),
        tokens_per_second=round(tokens_per_second(output_tokens, wall), 1),
        rouge_l_mean=mean(scored) if spec.workload == "answer" else None,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
        latency_p50_s=percentile([s.latency_s for s in samples], 50),
        startup_seconds=status.startup_seconds,
        prompt=prompt_description(spec.thinking),
        question_set=spec.question_set,
        engine_steps=len(steps),
        first_step_requests=next((s.running + s.waiting for s in steps if s.running), None),
        engine={
            **status.info,
            "startup_phases": dict(status.startup_phases),
            "settings": engine.config.summary(),
            "spec": asdict(spec),
        },
        samples=samples,
        timeline=timeline,
    )
