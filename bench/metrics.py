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
