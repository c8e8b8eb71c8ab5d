"""What a benchmark asks of the engine: the workloads, the spec of a run, per-request settings.

Workloads (see BENCHMARKS.md): `answer` (greedy answers up to max_new_tokens, scored with
ROUGE-L), `replay` (each request forced to its reference answer's token length, capped),
`full` (every request forced to max_new_tokens). No scorer here, so that the measuring tools
in `perf/` build the same requests without loading it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from engine import BENCH_BATCH, DEFAULT_SYSTEM_PROMPT, GREEDY, GenerationParams
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
    submit: str | None = None  # how the batch reaches vLLM (bench.submit; None: hold)

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


def build_params(encode, pairs: list[QAPair], spec: BenchmarkSpec) -> list[GenerationParams]:
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


def workload_list(text: str) -> list[str]:
    """An argparse type: workloads joined by commas (`replay,full`), each a known one."""
    names = [w for w in text.split(",") if w]
    bad = [w for w in names if w not in WORKLOADS]
    if bad or not names:
        got = f"unknown workload {bad[0]!r}" if bad else "no workload given"
        raise argparse.ArgumentTypeError(
            f"{got}; choose from {', '.join(WORKLOADS)}, or several joined by commas"
        )
    return names
