"""engine: the real vLLM engine on the CPU (tiny-random): streaming, abort, batches, limits."""

import asyncio
import gc
from dataclasses import replace

import pytest

from engine import GREEDY, EngineBusy, GenerationParams, RequestError, build_messages
from server.course import answer_all
from tests.conftest import prompt_with_budget

pytestmark = pytest.mark.slow


def stream_chat(service, messages, params, thinking=True):
    """A conversation's reply, streamed on the engine's loop as the chat route does."""

    def make(engine):
        fitted = engine.fit_conversation(messages, thinking, params)
        return engine.stream(fitted.ids, params)

    return service.relay(make)


def collect(service, messages, params, thinking=True):
    async def run():
        return [chunk async for chunk in stream_chat(service, messages, params, thinking)]

    return asyncio.run(run())


def on_engine(service, make, timeout=300.0):
    """`make(engine)`'s result, awaited on the engine's loop as the server's routes await it."""
    return service.submit(make(service.engine)).result(timeout=timeout)


def wait_idle(service, timeout=30.0):
    async def run():
        for _ in range(int(timeout / 0.1)):
            if service.engine_load()["unfinished"] == 0:
                return 0
            await asyncio.sleep(0.1)
        return service.engine_load()["unfinished"]

    return asyncio.run(run())


def test_status_reports_ready_with_engine_facts(service):
    status = service.status()
    assert status.ready and status.startup_seconds > 0
    from engine.settings.devices import gpu, runs_on_cpu

    assert status.info["device"] == ("CPU" if runs_on_cpu() else gpu().name)
    assert status.info["random_weights"] is True
    assert status.info["vllm"].startswith("0.")
    assert [name for name, _ in status.startup_phases] == ["model", "import", "engine", "warm-up"]


def test_start_up_objects_are_frozen_out_of_garbage_collection(service):
    assert service.status().ready
    assert gc.get_freeze_count() > 10_000  # vLLM's, the tokenizer's: all of the start-up heap


def test_stream_yields_many_deltas_counted_from_token_ids(service):
    params = GenerationParams(max_new_tokens=24, ignore_eos=True)
    chunks = collect(service, build_messages([], "介绍一下 CUDA"), params)
    assert len(chunks) >= 3
    assert chunks[-1].finished and chunks[-1].output_tokens == 24
    assert chunks[-1].ttft_s is not None and chunks[-1].ttft_s <= chunks[-1].elapsed_s
    assert sum(len(c.text) for c in chunks) > 0
    assert [c.output_tokens for c in chunks] == sorted(c.output_tokens for c in chunks)


def test_leaving_a_stream_aborts_the_request_in_the_engine(service):
    async def run():
        seen = 0
        async for chunk in stream_chat(
            service,
            build_messages([], "long story"),
            GenerationParams(max_new_tokens=900, ignore_eos=True),
        ):
            seen = chunk.output_tokens
            if seen >= 3:
                assert service.engine_load()["unfinished"] == 1
                break
        return seen

    assert 3 <= asyncio.run(run()) < 900
    assert wait_idle(service) == 0


def test_cancelled_task_aborts_too(service):
    async def run():
        task = asyncio.create_task(collect_async(service))
        while service.engine_load()["unfinished"] == 0:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def collect_async(svc):
        async for _ in stream_chat(
            svc, build_messages([], "x"), GenerationParams(max_new_tokens=900, ignore_eos=True)
        ):
            pass

    asyncio.run(run())
    assert wait_idle(service) == 0


def test_oversized_prompt_is_refused_clearly_then_engine_still_serves(service):
    huge = "GPU " * 3000  # far beyond max_model_len 1024

    async def direct():
        def make(engine):
            return engine.stream(engine.chat_prompt(huge), GenerationParams(max_new_tokens=8))

        return [c async for c in service.relay(make)]

    with pytest.raises(RequestError, match=r"at most 1023 \(max_model_len 1024"):
        asyncio.run(direct())
    with pytest.raises(RequestError, match=r"prompt of \d+ tokens; this engine takes at most"):
        collect(service, build_messages([], huge), GenerationParams(max_new_tokens=8))
    chunks = collect(
        service, build_messages([], "ok?"), GenerationParams(max_new_tokens=4, ignore_eos=True)
    )
    assert chunks[-1].output_tokens == 4


@pytest.mark.parametrize(
    "params, message",
    [
        (GenerationParams(temperature=5.0), "temperature"),
        (GenerationParams(top_p=0.0), "top_p"),
        (GenerationParams(top_k=0), "top_k"),
        (GenerationParams(max_new_tokens=0), "max_new_tokens"),
    ],
)
def test_bad_sampling_values_are_refused(service, params, message):
    with pytest.raises(RequestError, match=message):
        collect(service, build_messages([], "hi"), params)


def test_batch_keeps_order_and_exact_lengths(service):
    lengths = [5, 1, 9, 3, 7]

    async def make(engine):
        prompts = [engine.chat_prompt(f"问题 {n}") for n in lengths]
        params = [replace(GREEDY, max_new_tokens=n, ignore_eos=True) for n in lengths]
        return [c async for c in engine.generate_many(prompts, params)]

    done = on_engine(service, make)
    assert sorted(c.index for c in done) == list(range(5))
    assert {c.index: c.output_tokens for c in done} == dict(enumerate(lengths))


def test_answer_all_answers_every_question_in_order(service, tokenizer):
    """Each prompt leaves a different budget under max_model_len, so the answers differ from
    each other; each must equal the answer to its question asked alone (greedy)."""
    questions = [prompt_with_budget(tokenizer, b) for b in (3, 11, 6, 1, 8)]
    params = replace(GREEDY, max_new_tokens=64, ignore_eos=True)

    def ask(batch):
        async def run(engine):
            return await answer_all(engine, batch, params)

        return on_engine(service, run)

    answers = ask(questions)
    assert len(set(answers)) == len(questions), answers  # a reordering would show
    assert answers == [ask([q])[0] for q in questions]


def test_admission_limit_refuses_instead_of_queueing_forever(service):
    async def make(engine):
        n = engine.config.admission_limit + 1
        prompts = [engine.chat_prompt("q")] * n
        async for _ in engine.generate_many(prompts, [GREEDY] * n):
            pass

    with pytest.raises(EngineBusy, match="server busy"):
        on_engine(service, make)
    assert wait_idle(service) == 0


def run_batch(service, n: int, hold: bool, tokens: int = 4):
    """A batch of `n` forced-length requests; returns (completions, engine steps recorded)."""

    async def make(engine):
        engine.counters.steps.clear()
        prompts = [engine.chat_prompt(f"第{i}个问题：什么是 warp？") for i in range(n)]
        params = [replace(GREEDY, max_new_tokens=tokens, ignore_eos=True)] * n
        done = [c async for c in engine.generate_many(prompts, params, hold=hold)]
        return done, list(engine.counters.steps), sum(len(p) for p in prompts)

    return on_engine(service, make)


def test_a_held_batch_is_all_in_the_engine_before_its_first_step(service):
    """The scheduler is held while the batch is added: the engine's first step runs all of it.

    (Added one by one instead, the first step here runs 1 of 48.)"""
    n = 48
    done, steps, prompt_tokens = run_batch(service, n, hold=True)
    assert sorted(c.index for c in done) == list(range(n))
    assert all(c.output_tokens == 4 for c in done)
    first = next(s for s in steps if s.running)  # the first step that ran requests
    assert first.running + first.waiting == n, f"first step saw {first} of a batch of {n}"
    assert first.prompt_tokens == prompt_tokens, "the whole batch was not prefilled in one step"
    assert sum(s.generated_tokens for s in steps) == 4 * n
    assert wait_idle(service) == 0
