"""What the measuring tools share: their common flags, and vLLM's offline `LLM` with the app's
settings (the requests, the engine, a timed batch).

The tools (`perf.bare`, `perf.kernels`, `perf.replicas`) build the benchmark's requests here
exactly as the app does (the course prompt's token ids, the workload's per-request settings,
the same `SamplingParams`), start `LLM` from the same `EngineConfig`, and time `LLM.generate`
the same way.
"""

from __future__ import annotations

import argparse
import time

from bench.workloads import BenchmarkSpec, build_params
from engine import BENCH_BATCH, add_config_arguments
from engine.models.sources import resolve_model
from engine.qwen3.prompt import chat_prompt_ids, resolve_thinking, token_ids
from engine.runtime.lifecycle import load_tokenizer
from engine.runtime.vllm_args import engine_kwargs, sampling_params
from engine.settings.config import EngineConfig
from engine.settings.flags import positive_int
from engine.types import GenerationParams
from eval_data import (
    DataError,
    FormatError,
    QAPair,
    add_question_arguments,
    questions_from_args,
)

Batch = tuple[list[list[int]], list[GenerationParams]]  # prompt token ids, per-request params


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A tool's parser, its module docstring as the description (kept as written)."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def tool_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the flags every offline tool takes: `--limit`, `--max-new-tokens`, the
    question set (`--question-set`, `--data`) and the engine's flags (`--profile`, ...)."""
    parser = command_parser(prog, description)
    parser.add_argument("--limit", type=positive_int, default=BENCH_BATCH, help="questions")
    parser.add_argument("--max-new-tokens", type=positive_int, default=256)
    add_question_arguments(parser)
    add_config_arguments(parser)
    return parser


def tool_questions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[QAPair]:
    """The first `--limit` questions the flags chose; exits saying why when they cannot be had
    (e.g. the official set offline)."""
    try:
        pairs = questions_from_args(args)[0]
    except (DataError, FormatError) as err:
        parser.error(str(err))
    return pairs[: args.limit]


def offline_workloads(
    config: EngineConfig, workloads: list[str], pairs: list[QAPair], max_new_tokens: int
) -> dict[str, Batch]:
    """Each workload's batch over `pairs`, with the course prompt the engine would use."""
    model = resolve_model(config.model)
    tokenizer = load_tokenizer(model.path)
    thinking = resolve_thinking(config.thinking, config.model, model.random_weights)
    prompts = [chat_prompt_ids(tokenizer, p.question, thinking=thinking) for p in pairs]

    def encode(text: str) -> list[int]:
        return token_ids(tokenizer, text)

    return {
        w: (prompts, build_params(encode, pairs, BenchmarkSpec(w, len(pairs), max_new_tokens)))
        for w in workloads
    }


def offline_batch(config: EngineConfig, workload: str, pairs: list[QAPair], max_new_tokens: int):
    """vLLM inputs and SamplingParams of one workload's batch over `pairs`."""
    batches = offline_workloads(config, [workload], pairs, max_new_tokens)
    return offline_requests(*batches[workload])


def offline_requests(prompts: list[list[int]], params: list[GenerationParams]):
    """vLLM inputs and SamplingParams for `LLM.generate` (no detokenising: ids are counted)."""
    sampling = [sampling_params(p, p.max_new_tokens, detokenize=False) for p in params]
    return [{"prompt_token_ids": ids} for ids in prompts], sampling


def start_llm(config: EngineConfig, **overrides):
    """vLLM's offline `LLM` with the engine arguments the app would use (`overrides` win)."""
    from vllm import LLM

    return LLM(**{**engine_kwargs(config, resolve_model(config.model)), **overrides})


def timed_generate(llm, inputs, sampling) -> dict:
    """Run one batch through `LLM.generate`; its output tokens (counted from ids) and seconds."""
    started = time.perf_counter()
    outs = llm.generate(inputs, sampling, use_tqdm=False)
    wall = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "output_tokens": tokens,
        "wall_seconds": wall,
        "tokens_per_second": tokens / wall,
    }


def offline_runs(config: EngineConfig, batches: dict[str, Batch], runs: int = 3) -> dict[str, dict]:
    """Start `LLM` once; per batch, warm up once, then time `runs` batches (ids counted).

    Returns, per batch name, the runs and the seconds from the start of the engine to the end
    of that batch's warm-up.
    """
    started = time.perf_counter()
    llm = start_llm(config)
    results = {}
    for name, (prompts, params) in batches.items():
        inputs, sampling = offline_requests(prompts, params)
        timed_generate(llm, inputs, sampling)  # warm-up
        startup = time.perf_counter() - started
        figures = [timed_generate(llm, inputs, sampling) for _ in range(runs)]
        results[name] = {"startup_seconds_incl_warmup": startup, "runs": figures}
    return results
