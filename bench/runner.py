"""The batch-358 benchmark: submit the workload at once, report progress, score.

The runner is an async generator run on the engine's loop: it yields `Progress` events while
requests finish and a `BenchmarkResult` last. The workloads and the run's spec are in
`bench.workloads`; scoring (ROUGE-L, `answer` only) runs in a process of its own.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import aclosing
from dataclasses import asdict, dataclass, field, replace

from bench.metrics import (
    first_step_requests,
    mean,
    percentile,
    rank_split,
    rouge_l_f1,
    tokens_per_second,
)
from bench.submit import submit_batch
from bench.workloads import BenchmarkSpec, build_params
from engine import Completion, Engine, answer_text
from engine.qwen3.prompt import prompt_description
from engine.runtime.engine import Admission
from eval_data import QAPair


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
    rank: int | None = None  # the data-parallel rank that served it


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
    engine_steps: int  # engine steps that ran during the run, all ranks (vLLM's stat hook)
    first_step_requests: int | None  # requests in the engine at each rank's first step, summed
    ranks: list[dict]  # per data-parallel rank: requests, output tokens, steps, mean batch
    engine: dict
    samples: list[Sample]
    timeline: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def score_answer(prediction: str, reference: str) -> float:
    """ROUGE-L of a model answer, its reasoning (if any) left out."""
    return rouge_l_f1(answer_text(prediction), reference)


async def run_benchmark(
    engine: Engine,
    pairs: list[QAPair],
    spec: BenchmarkSpec,
    interval: float = 0.25,
    admitted: Admission | None = None,
) -> AsyncIterator[Progress | BenchmarkResult]:
    """Run one benchmark on `engine` (its own loop); yield Progress events, then the result.
    `admitted`: the room the caller already holds for the run's questions (else it is
    admitted here, before the prompts are built, so that a busy engine refuses at once)."""
    spec.validate(len(pairs))
    pairs = pairs[: spec.limit]
    thinking = engine.thinking if spec.thinking is None else spec.thinking
    spec = replace(spec, thinking=bool(thinking), submit=spec.submit or "hold")
    with engine.admitted(admitted, len(pairs)) as held:
        async with aclosing(_run(engine, pairs, spec, interval, held)) as events:
            async for event in events:
                yield event


async def _run(
    engine: Engine, pairs: list[QAPair], spec: BenchmarkSpec, interval: float, admitted: Admission
) -> AsyncIterator[Progress | BenchmarkResult]:
    """`run_benchmark` once admitted."""
    # Rendering and tokenizing 358 prompts takes a while: off the loop that serves the streams.
    prompts, params = await asyncio.to_thread(_requests, engine, pairs, spec)
    scoring = Scoring() if spec.workload == "answer" else None
    try:
        if scoring:
            await scoring.warm_up()  # before the clock starts
        steps_before = list(engine.counters.steps)[-1:]
        tally = Tally(engine, pairs)
        batch = _progress(engine, tally, prompts, params, spec, scoring, interval, admitted)
        async with aclosing(batch) as events:  # leaving early aborts the batch's requests
            async for event in events:
                yield event
    finally:
        if scoring:
            scoring.close()
    tally.samples.sort(key=lambda s: s.index)
    yield _result(engine, spec, tally, _steps_since(engine, steps_before))


def _requests(engine: Engine, pairs: list[QAPair], spec: BenchmarkSpec) -> tuple[list, list]:
    """The batch's prompts (token ids) and per-request settings."""
    prompts = [engine.chat_prompt(p.question, spec.system_prompt, spec.thinking) for p in pairs]
    return prompts, build_params(engine.encode, pairs, spec)


class Scoring:
    """ROUGE-L of finished answers, in a process of its own so that scoring never slows the
    engine's output handling."""

    def __init__(self):
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        self._scores: dict[int, asyncio.Future] = {}

    def _score(self, prediction: str, reference: str) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, score_answer, prediction, reference)

    async def warm_up(self) -> None:
        """Load jieba's dictionary in the scoring process."""
        await self._score("预热", "预热")

    def submit(self, sample: Sample) -> None:
        self._scores[sample.index] = self._score(sample.prediction, sample.reference)

    async def fill(self, samples: list[Sample], wait: bool) -> None:
        """Copy finished scores into their samples (waiting for all of them if asked)."""
        if wait and self._scores:
            await asyncio.gather(*self._scores.values())
        for i, sample in enumerate(samples):
            future = self._scores.get(sample.index)
            if sample.rouge_l is None and future is not None and future.done():
                samples[i] = replace(sample, rouge_l=future.result())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Tally:
    """One run's finished samples and its progress timeline, from the moment it is created.

    Output tokens come from the engine's per-step counter, so the figure moves while no
    request finishes (the `full` workload)."""

    def __init__(self, engine: Engine, pairs: list[QAPair]):
        self.pairs = pairs
        self.samples: list[Sample] = []
        self.timeline: list[dict] = []
        self.wall = 0.0  # seconds from the start to the last finished request
        self._counters = engine.counters
        self._tokens_at_start = engine.counters.generated_tokens
        self._start = self._last_snapshot = time.perf_counter()

    @property
    def complete(self) -> bool:
        return len(self.samples) == len(self.pairs)

    def add(self, done: Completion) -> Sample:
        """Record a finished request as a sample (unscored)."""
        self.wall = time.perf_counter() - self._start
        pair = self.pairs[done.index]
        sample = Sample(
            done.index,
            pair.question,
            pair.reference,
            done.text,
            None,
            done.output_tokens,
            done.prompt_tokens,
            done.ttft_s,
            done.latency_s,
            done.rank,
        )
        self.samples.append(sample)
        return sample

    def due(self, interval: float) -> bool:
        return time.perf_counter() - self._last_snapshot >= interval

    def snapshot(self) -> Progress:
        """A progress event now, also kept as a point of the timeline."""
        self._last_snapshot = time.perf_counter()
        now = self._last_snapshot - self._start
        tokens = self._counters.generated_tokens - self._tokens_at_start
        scored = [s.rouge_l for s in self.samples if s.rouge_l is not None]
        event = Progress(
            len(self.samples),
            len(self.pairs),
            tokens,
            now,
            tokens_per_second(tokens, now),
            mean(scored),
            list(self.samples),
        )
        self.timeline.append(
            {
                "elapsed_s": round(now, 4),
                "completed": event.completed,
                "output_tokens": tokens,
                "tokens_per_second": event.tokens_per_second,
                "rouge_l_mean": event.rouge_l_mean,
            }
        )
        return event


async def _progress(
    engine: Engine,
    tally: Tally,
    prompts: list[list[int]],
    params: list,
    spec: BenchmarkSpec,
    scoring: Scoring | None,
    interval: float,
    admitted: Admission,
) -> AsyncIterator[Progress]:
    """Submit the batch, tally each request as it finishes, yield a snapshot every `interval`."""
    finished: asyncio.Queue = asyncio.Queue()
    collector = asyncio.create_task(_collect(engine, prompts, params, spec, finished, admitted))
    try:
        while not tally.complete:
            try:  # a tick every `interval` even while no request finishes
                done = await asyncio.wait_for(finished.get(), timeout=interval)
            except TimeoutError:
                yield tally.snapshot()
                continue
            if isinstance(done, Exception):
                raise done
            sample = tally.add(done)
            if scoring:
                scoring.submit(sample)
                await scoring.fill(tally.samples, wait=False)
            if tally.due(interval):
                yield tally.snapshot()
        if scoring:
            await scoring.fill(tally.samples, wait=True)
        yield tally.snapshot()
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)


async def _collect(
    engine: Engine, prompts, params, spec: BenchmarkSpec, finished, admitted: Admission
) -> None:
    """Put each finished request of the batch, or the error that ended it, on `finished`."""
    try:
        async for done in submit_batch(
            engine, prompts, params, spec.submit, f"bench-{spec.workload}", admitted
        ):
            finished.put_nowait(done)
    except Exception as err:
        finished.put_nowait(err)


def _steps_since(engine: Engine, before: list) -> list:
    """The engine steps recorded since `before` (the last step seen then, if any)."""
    steps = list(engine.counters.steps)
    if before:
        for i in range(len(steps) - 1, -1, -1):
            if steps[i] is before[0]:
                return steps[i + 1 :]
    return steps


def _result(engine: Engine, spec: BenchmarkSpec, tally: Tally, steps: list) -> BenchmarkResult:
    samples, wall = tally.samples, tally.wall
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
        first_step_requests=first_step_requests([(s.rank, s.running, s.waiting) for s in steps]),
        ranks=rank_split(
            [(s.rank, s.output_tokens) for s in samples], [(s.rank, s.running) for s in steps]
        ),
        engine={
            **status.info,
            "startup_phases": dict(status.startup_phases),
            "settings": engine.config.summary(),
            "spec": asdict(spec),
        },
        samples=samples,
        timeline=tally.timeline,
    )
