"""The product's benchmark: workloads, the batch runner, scoring and reports.

    python -m bench --workload replay --limit 8 --model tiny-random --profile cpu --out r.json

The runner and the scorer (jieba, rouge_score) load on first use of their names, so that
`bench.workloads` and `bench.report` import without them (the measuring tools in `perf/` do).
"""

from importlib import import_module

from bench.workloads import WORKLOADS, BenchmarkError, BenchmarkSpec

_LAZY = {
    "BenchmarkResult": "bench.runner",
    "Progress": "bench.runner",
    "Sample": "bench.runner",
    "run_benchmark": "bench.runner",
    "percentile": "bench.metrics",
    "rouge_l_f1": "bench.metrics",
    "tokens_per_second": "bench.metrics",
}

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


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
