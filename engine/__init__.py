"""All vLLM code: configuration, model sources, the shared engine and its service.

Nothing here imports Gradio or serves HTTP; vLLM itself is imported only when an engine starts,
so the UI, the HTTP layer and `--help` stay light.

| module | job |
|---|---|
| `config` | `EngineConfig`, the one validated settings object |
| `profiles` | named profiles, the automatic choice per GPU family, fitting to memory |
| `flags` | the command-line flags that build an `EngineConfig` |
| `vllm_args` | the one place that turns a config into vLLM's arguments and requests |
| `types` | value types and errors (no vLLM) |
| `lifecycle` | start (model, import, build, warm-up), status, health, shutdown |
| `warmup` | the start-up warm-up: the benchmark's batch and what users send |
| `engine` | admission, prompts, streaming (the core call), batches |
| `service` | the engine on its own loop thread: watchdog, serialized restarts, stop |
| `stats` | vLLM's stat hook: tokens and queues per data-parallel rank |
| `chat` | Qwen3 prompts: messages to token ids, the context's limit, reasoning split |
| `children` | vLLM's child processes and builds that may never return |
| `models`, `qwen3_files`, `cache`, `modelinfo` | model sources and the cache folder |
| `devices` | which GPUs and which vLLM build are here |
| `rank` | `python -m engine.rank`: data-parallel ranks on another host |
"""

from engine.chat import (
    DEFAULT_SYSTEM_PROMPT,
    answer_text,
    build_messages,
    sampling_defaults,
    split_thinking,
)
from engine.config import BENCH_BATCH, DEFAULT_MODEL, EngineConfig
from engine.engine import Engine
from engine.flags import add_config_arguments, config_from_args
from engine.models import ModelError, resolve_model
from engine.profiles import PROFILE_NAMES, make_config
from engine.service import EngineService
from engine.types import (
    GREEDY,
    Chunk,
    Completion,
    EngineBusy,
    EngineStatus,
    EngineUnavailable,
    GenerationParams,
    RequestError,
    ServerStopping,
)

__all__ = [
    "BENCH_BATCH",
    "DEFAULT_MODEL",
    "DEFAULT_SYSTEM_PROMPT",
    "GREEDY",
    "PROFILE_NAMES",
    "Chunk",
    "Completion",
    "Engine",
    "EngineBusy",
    "EngineConfig",
    "EngineService",
    "EngineStatus",
    "EngineUnavailable",
    "GenerationParams",
    "ModelError",
    "RequestError",
    "ServerStopping",
    "add_config_arguments",
    "answer_text",
    "build_messages",
    "config_from_args",
    "make_config",
    "resolve_model",
    "sampling_defaults",
    "split_thinking",
]
