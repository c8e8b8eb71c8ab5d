"""Pure scoring functions: the course's ROUGE-L and throughput arithmetic. No I/O.

`rouge_l_f1` is the official harness's scorer: jieba-segment both texts, join the tokens with
spaces, and take `rouge_score`'s ROUGE-L F-measure (no stemming). It reproduces the official
per-question figures exactly.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from statistics import fmean, median

import jieba
from rouge_score import rouge_scorer

jieba.setLogLevel(logging.WARNING)


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _segment(text: str) -> str:
    return " ".join(jieba.lcut(text))


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of a prediction against a reference, as the course grader computes it."""
    pred, ref = _segment(prediction), _segment(reference)
    if not pred.strip() or not ref.strip():
        return 0.0
    return _scorer().score(ref, pred)["rougeL"].fmeasure


def tokens_per_second(output_tokens: int, wall_seconds: float) -> float:
    """Output tokens over wall seconds; 0.0 before any time has passed."""
    return output_tokens / wall_seconds if wall_seconds > 0 else 0.0


def mean(values: list[float]) -> float | None:
    """Arithmetic mean, or None for no values."""
    return fmean(values) if values else None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation, or None for no values."""
    if not values:
        return None
    if q == 50:
        return median(values)
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def rank_split(served: list[tuple[int | None, int]], steps: list[tuple[int, int]]) -> list[dict]:
    """How a batch spread over data-parallel ranks.

    `served`: (rank, output tokens) of each request (rank None: not known); `steps`: (rank,
    requests running after the step) of each engine step. Returns one row per rank, in rank
    order: requests, output tokens, engine steps, and the mean batch of its working steps.
    """
    ranks = sorted({r for r, _ in served if r is not None} | {r for r, _ in steps})
    rows = []
    for rank in ranks:
        batches = [running for r, running in steps if r == rank and running]
        rows.append(
            {
                "rank": rank,
                "requests": sum(1 for r, _ in served if r == rank),
                "output_tokens": sum(n for r, n in served if r == rank),
                "engine_steps": sum(1 for r, _ in steps if r == rank),
                "mean_batch": round(fmean(batches), 1) if batches else None,
            }
        )
    return rows


def first_step_requests(steps: list[tuple[int, int, int]]) -> int | None:
    """Requests in the engine at each rank's first working step, added up over the ranks.

    `steps`: (rank, running, waiting) of each engine step, in order. None when none worked.
    """
    first: dict[int, int] = {}
    for rank, running, waiting in steps:
        if running and rank not in first:
            first[rank] = running + waiting
    return sum(first.values()) if first else None
