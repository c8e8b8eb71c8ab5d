"""Live engine figures from vLLM's stat hook: tokens generated, queues, recent steps per rank.

vLLM builds one stat logger per data-parallel rank (`StatLoggerBase(vllm_config,
engine_index)`) and calls `record` after every engine step that rank reports; the counters here
keep each rank's figures apart and sum them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    """One engine step of one data-parallel rank, as vLLM's stat hook reports it."""

    running: int  # requests scheduled in the rank after this step
    waiting: int  # requests queued in the rank, not yet scheduled
    prompt_tokens: int  # prefilled in this step
    generated_tokens: int  # sampled in this step
    rank: int = 0  # the data-parallel rank (vLLM's engine index)


@dataclass
class RankCounters:
    """One data-parallel rank's figures: tokens generated, its scheduler's last queues."""

    generated_tokens: int = 0
    running: int = 0
    waiting: int = 0


@dataclass
class Counters:
    """The figures of every rank, summed on read; and the recent steps of all ranks."""

    ranks: dict[int, RankCounters] = field(default_factory=dict)
    steps: deque = field(default_factory=lambda: deque(maxlen=8192))

    def rank(self, index: int) -> RankCounters:
        return self.ranks.setdefault(index, RankCounters())

    @property
    def generated_tokens(self) -> int:
        return sum(r.generated_tokens for r in list(self.ranks.values()))

    @property
    def running(self) -> int:
        return sum(r.running for r in list(self.ranks.values()))

    @property
    def waiting(self) -> int:
        return sum(r.waiting for r in list(self.ranks.values()))


def stat_logger(counters: Counters):
    """A vLLM stat-logger class that feeds `counters`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class StepRecorder(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            self.mine = counters.rank(engine_index)
            self.engine_index = engine_index

        def record(self, scheduler_stats, iteration_stats, *args, **kwargs):
            prompt = generated = 0
            if iteration_stats is not None:
                prompt = iteration_stats.num_prompt_tokens
                generated = iteration_stats.num_generation_tokens
                self.mine.generated_tokens += generated
            if scheduler_stats is not None:
                self.mine.running = scheduler_stats.num_running_reqs
                self.mine.waiting = scheduler_stats.num_waiting_reqs
                counters.steps.append(
                    Step(self.mine.running, self.mine.waiting, prompt, generated, self.engine_index)
                )

        def log_engine_initialized(self):
            pass

    return StepRecorder
