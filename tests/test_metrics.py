"""bench.metrics: the ROUGE-L scorer reproduces every official figure; arithmetic helpers."""

import pytest

from bench.metrics import (
    first_step_requests,
    mean,
    percentile,
    rank_split,
    rouge_l_f1,
    tokens_per_second,
)


def test_rouge_l_reproduces_all_358_official_values(seed_details):
    assert len(seed_details) == 358
    mismatches = [
        i
        for i, d in enumerate(seed_details)
        if rouge_l_f1(d["prediction"], d["reference"]) != d["rougeL_f1"]
    ]
    assert mismatches == []
    mean_score = sum(rouge_l_f1(d["prediction"], d["reference"]) for d in seed_details) / 358
    assert mean_score == pytest.approx(0.9082281855821821, abs=1e-12)


def test_rouge_l_edges():
    assert rouge_l_f1("", "参考答案") == 0.0
    assert rouge_l_f1("   ", "参考答案") == 0.0
    assert rouge_l_f1("使用 __shared__ 内存 TILE_WIDTH", "使用 __shared__ 内存 TILE_WIDTH") == 1.0
    assert 0.0 < rouge_l_f1("TILE_WIDTH 16", "TILE_WIDTH 32 与 shared memory") < 1.0
    # As in the course's grader: rouge_score's tokenizer keeps only [a-z0-9], so text with no
    # Latin letters or digits scores 0 even against itself.
    assert rouge_l_f1("共享内存减少访问", "共享内存减少访问") == 0.0


def test_throughput_and_percentiles():
    assert tokens_per_second(1000, 2.0) == 500.0
    assert tokens_per_second(10, 0.0) == 0.0
    assert mean([]) is None and mean([1.0, 3.0]) == 2.0
    assert percentile([], 95) is None
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)


def test_rank_split_counts_each_ranks_share():
    served = [(0, 10), (1, 12), (0, 5), (None, 7)]
    steps = [(0, 2), (1, 1), (0, 1), (1, 0), (0, 0)]
    assert rank_split(served, steps) == [
        {"rank": 0, "requests": 2, "output_tokens": 15, "engine_steps": 3, "mean_batch": 1.5},
        {"rank": 1, "requests": 1, "output_tokens": 12, "engine_steps": 2, "mean_batch": 1.0},
    ]
    assert rank_split([], []) == []


def test_first_step_requests_adds_each_ranks_first_working_step():
    assert first_step_requests([(0, 0, 0), (0, 179, 0), (1, 170, 9), (0, 179, 0)]) == 358
    assert first_step_requests([(0, 0, 3)]) is None
