"""The bare engine, for comparison: vLLM's offline `LLM.generate` with the same settings.

Used by `python -m bench.bare` to show how close the app's own path (AsyncLLM behind the
service) comes to what vLLM reaches on its own.
"""

from __future__ import annotations

import time

from engine.config import EngineConfig
from engine.engine import GenerationParams, engine_kwargs_for
from engine.models import resolve_model


def offline_requests(prompts: list[list[int]], params: list[GenerationParams]):
    """vLLM inputs and SamplingParams for `LLM.generate` (no detokenising: ids are counted)."""
    from vllm import SamplingParams

    sampling = [
        SamplingParams(
            max_tokens=p.max_new_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            ignore_eos=p.ignore_eos,
            min_tokens=p.max_new_tokens if p.ignore_eos else 0,
            detokenize=False,
        )
        for p in params
    ]
    return [{"prompt_token_ids": ids} for ids in prompts], sampling


def offline_runs(
    config: EngineConfig,
    batches: dict[str, tuple[list[list[int]], list[GenerationParams]]],
    runs: int = 3,
) -> dict[str, dict]:
    """Start `LLM` once; per batch, warm up once, then time `runs` batches (ids counted).

    `batches` maps a name to (prompt token ids, per-request params); returns, per name, the
    runs and the seconds from the start of the engine to the end of that batch's warm-up.
    """
    from vllm import LLM

    started = time.perf_counter()
    llm = LLM(**engine_kwargs_for(config, resolve_model(config.model)))
    results = {}
    for name, (prompts, params) in batches.items():
        inputs, sampling = offline_requests(prompts, params)
        llm.generate(inputs, sampling, use_tqdm=False)
        startup = time.perf_counter() - started
        figures = []
        for _ in range(runs):
            t0 = time.perf_counter()
            outs = llm.generate(inputs, sampling, use_tqdm=False)
            wall = time.perf_counter() - t0
            tokens = sum(len(o.outputs[0].token_ids) for o in outs)
            figures.append(
                {"output_tokens": tokens, "wall_seconds": wall, "tokens_per_second": tokens / wall}
            )
        results[name] = {"startup_seconds_incl_warmup": startup, "runs": figures}
    return results
