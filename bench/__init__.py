"""Scoring, the batch benchmark runner and its reports.

python -m bench --workload replay --limit 8 --model tiny-random --profile cpu --out r.json
"""

from bench.metrics import percentile, rouge_l_f1, tokens_per_second
from bench.runner import (
    WORKLOADS,
    BenchmarkError,
    BenchmarkResult,
    BenchmarkSpec,
    Progress,
    Sample,
    run_benchmark,
)

__all__ = [
    "WORKLOADS",
    "BenchmarkError",
    "BenchmarkResult",
    "BenchmarkSpec",
    "Progress",
    "Sample",
    "percentile",
    "rouge_l_f1",
    "run_benchmark",
    "tokens_per_second",
]
