"""The one place that turns an EngineConfig into vLLM's own arguments.

- `engine_kwargs`: the keyword arguments of vLLM's `AsyncEngineArgs` (the app, the benchmark,
  the offline measuring tools and the ranks on other hosts all start from these);
- `headless_args`: `vllm serve --headless`'s arguments for ranks on other hosts;
- `server_args`: `vllm serve`'s arguments for vLLM's OpenAI-compatible server on an engine;
- `sampling_params` and `token_prompt`: a request as vLLM takes it;
- `prepare_environment`: the variables vLLM reads at start.

vLLM is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from engine.models.sources import ResolvedModel
from engine.settings.config import EngineConfig
from engine.types import GenerationParams

REASONING_PARSER = "qwen3"  # vLLM's parser for Qwen3's <think>...</think>
AUTO_FIT = -1  # vLLM's max_model_len for "the model's own, shortened to what memory holds"


def engine_kwargs(config: EngineConfig, model: ResolvedModel) -> dict:
    """Keyword arguments for vLLM's `AsyncEngineArgs` (and the offline `LLM`)."""
    kwargs = dict(
        model=str(model.path),
        tokenizer=str(model.path),
        # The name clients and the metrics' model_name label see, not the folder's path.
        served_model_name=model.served_name,
        # Where vLLM's OpenAI server and structured outputs split Qwen3's <think> block.
        reasoning_parser=REASONING_PARSER,
        load_format="dummy" if model.random_weights else config.load_format,
        dtype=config.dtype,
        quantization=config.quantization,
        kv_cache_dtype=config.kv_cache_dtype,
        max_model_len=AUTO_FIT if config.max_model_len is None else config.max_model_len,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        # vLLM's own admission check backs up the app's (engine.runtime.engine.Engine.admit).
        max_num_queued_reqs=config.admission_limit,
        gpu_memory_utilization=config.gpu_memory_utilization,
        enforce_eager=config.enforce_eager,
        async_scheduling=config.async_scheduling,
        stream_interval=config.stream_interval,
        enable_prefix_caching=config.enable_prefix_caching,
        cudagraph_capture_sizes=(
            list(config.cudagraph_capture_sizes) if config.cudagraph_capture_sizes else None
        ),
        compilation_config=_compilation(config),
        attention_backend=config.attention_backend,
        block_size=config.block_size,
        disable_log_stats=config.disable_log_stats or None,
        seed=config.seed,
        distributed_executor_backend=config.distributed_executor_backend,
        **_data_parallel(config),
    )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return {**kwargs, **config.extra_engine_args}


def _data_parallel(config: EngineConfig) -> dict:
    if config.data_parallel_size == 1:
        return {}
    return dict(
        data_parallel_size=config.data_parallel_size,
        data_parallel_size_local=config.data_parallel_size_local,
        data_parallel_address=config.data_parallel_address,
        data_parallel_rpc_port=config.data_parallel_rpc_port,
    )


def _compilation(config: EngineConfig) -> dict | None:
    merged = dict(config.compilation_config or {})
    if config.cudagraph_mode:
        merged["cudagraph_mode"] = config.cudagraph_mode
    if config.compile_backend == "none":
        merged["mode"] = 0  # vLLM's CompilationMode.NONE: FULL CUDA graphs, no Dynamo
    elif config.compile_backend:
        merged["backend"] = config.compile_backend
    return merged or None


def async_engine_args(config: EngineConfig, model: ResolvedModel):
    """vLLM's AsyncEngineArgs for a config and a resolved model."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(**engine_kwargs(config, model))


def headless_args(config: EngineConfig, model: ResolvedModel, start_rank: int):
    """`vllm serve --headless`'s arguments, carrying exactly the engine arguments of the app."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(["--headless"])
    for name, value in {
        **engine_kwargs(config, model),
        "data_parallel_start_rank": start_rank,
    }.items():
        setattr(args, name, value)
    args.api_server_count = 0  # what `vllm serve --headless` sets
    return args


def server_args(config: EngineConfig, model: ResolvedModel, vllm_config):
    """`vllm serve`'s arguments for vLLM's OpenAI server on an engine already running.

    The reasoning parser is read from the engine's config: vLLM's `init_app_state` takes it
    from `args.structured_outputs_config`, which `--reasoning-parser` alone does not reach.
    """
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(
        ["--model", str(model.path), "--served-model-name", model.served_name]
    )
    args.structured_outputs_config = vllm_config.structured_outputs_config
    args.disable_log_stats = config.disable_log_stats
    return args


def prepare_environment(config: EngineConfig) -> None:
    """Environment vLLM reads at start: the CPU backend's KV-cache size (GiB)."""
    from engine.settings import devices

    if devices.runs_on_cpu():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kvcache_gib))


def sampling_params(
    params: GenerationParams,
    max_tokens: int,
    final_only: bool | None = None,
    detokenize: bool = True,
):
    """vLLM's SamplingParams for a request; a forced length (`ignore_eos`) is also a minimum.

    `final_only`: True, only the finished output; False, each step's new tokens; None, vLLM's
    default (the offline `LLM`).
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kind = {}
    if final_only is not None:
        final, delta = RequestOutputKind.FINAL_ONLY, RequestOutputKind.DELTA
        kind = {"output_kind": final if final_only else delta}
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        ignore_eos=params.ignore_eos,
        seed=params.seed,
        min_tokens=max_tokens if params.ignore_eos else 0,
        detokenize=detokenize,
        skip_special_tokens=True,
        **kind,
    )


def token_prompt(ids: Sequence[int]) -> dict:
    """A prompt of token ids in the form vLLM adds without a thread hop: a rendered
    `TokensInput` is processed inline, where a raw `{"prompt_token_ids": ...}` goes through
    the renderer's thread pool one request at a time."""
    return {"type": "token", "prompt_token_ids": list(ids)}
