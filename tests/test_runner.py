"""bench.runner on the real engine: replay lengths, ROUGE-L scoring, progress, cancellation."""

import asyncio

import pytest

from bench import (
    BenchmarkError,
    BenchmarkResult,
    BenchmarkSpec,
    Progress,
    rouge_l_f1,
    run_benchmark,
)
from engine import answer_text
from eval_data import load_course_file

pytestmark = pytest.mark.slow


def run(service, pairs, spec, stop_after=None):
    async def go():
        events = []
        async for event in service.relay(lambda e: run_benchmark(e, pairs, spec, interval=0.05)):
            events.append(event)
            if stop_after and isinstance(event, Progress) and event.output_tokens >= stop_after:
                break
        return events

    return asyncio.run(go())


def test_replay_produces_exactly_the_reference_lengths(service, question_file, tokenizer):
    pairs = load_course_file(question_file)
    events = run(service, pairs, BenchmarkSpec("replay", limit=8))
    result = events[-1]
    assert isinstance(result, BenchmarkResult) and result.n == 8
    expected = [
        min(256, len(tokenizer.encode(p.reference, add_special_tokens=False))) for p in pairs[:8]
    ]
    assert [s.output_tokens for s in result.samples] == expected
    assert result.output_tokens == sum(expected)
    assert result.tokens_per_second == pytest.approx(
        result.output_tokens / result.wall_seconds, rel=1e-3
    )
    assert result.rouge_l_mean is None
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].completed == 8
    assert all(s.ttft_s is not None and s.latency_s >= s.ttft_s for s in result.samples)


def test_answer_workload_scores_every_answer(service, question_file):
    pairs = load_course_file(question_file)
    result = run(service, pairs, BenchmarkSpec("answer", limit=4, max_new_tokens=16))[-1]
    scores = [s.rouge_l for s in result.samples]
    assert scores == [rouge_l_f1(answer_text(s.prediction), s.reference) for s in result.samples]
    assert result.rouge_l_mean == pytest.approx(sum(scores) / 4)
    assert result.engine["spec"]["workload"] == "answer"


def test_cancelled_run_leaves_no_requests(service, question_file):
    pairs = load_course_file(question_file)
    events = run(service, pairs, BenchmarkSpec("full", limit=64), stop_after=64)
    assert not isinstance(events[-1], BenchmarkResult)
    for _ in range(100):
        if service.engine_load()["unfinished"] == 0:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert service.engine_load()["unfinished"] == 0
    again = run(service, pairs, BenchmarkSpec("full", limit=2, max_new_tokens=8))[-1]
    assert again.output_tokens == 16


@pytest.mark.parametrize(
    "spec, message",
    [
        (BenchmarkSpec("nope"), "workload"),
        (BenchmarkSpec("answer", limit=0), "1..358"),
        (BenchmarkSpec("answer", limit=359), "1..358"),
        (BenchmarkSpec("answer", max_new_tokens=0), "max new tokens"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(BenchmarkError, match=message):
        spec.validate(358)
