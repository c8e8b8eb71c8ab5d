"""The bare engine, for comparison: vLLM's offline `LLM.generate` with the same settings.

Used by `python -m bench.bare` to show how close the app's own path (AsyncLLM behind the
service) comes to what vLLM reaches on its own.
"""

from __future__ import annotations

import time

from engine.config import EngineConfig
from engine.engine import GenerationParams, engine_kwargs_for
from engine.models import resolve_model


def offline_runs(
    config: EngineConfig, prompts: list[list[int]], params: list[GenerationParams], runs: int = 3
) -> dict:
    """Start `LLM`, warm up with the batch once, then time `runs` batches; token counts from ids."""
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(**engine_kwargs_for(config, resolve_model(config.model)))
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
    inputs = [{"prompt_token_ids": ids} for ids in prompts]
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
    return {"startup_seconds_incl_warmup": startup, "runs": figures}
