"""All vLLM code: configuration, model sources, the shared engine and its service wrapper.

Nothing here imports Gradio; vLLM itself is imported only when an engine starts, so the UI and
`--help` stay light.
"""

from engine.chat import (
    DEFAULT_SYSTEM_PROMPT,
    answer_text,
    build_messages,
    sampling_defaults,
    split_thinking,
)
from engine.config import (
    BENCH_BATCH,
    DEFAULT_MODEL,
    PROFILE_NAMES,
    EngineConfig,
    add_config_arguments,
    config_from_args,
    make_config,
)
from engine.engine import (
    GREEDY,
    Chunk,
    Completion,
    Engine,
    EngineBusy,
    EngineStatus,
    EngineUnavailable,
    GenerationParams,
    RequestError,
)
from engine.models import ModelError, resolve_model
from engine.service import EngineService

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
    "add_config_arguments",
    "answer_text",
    "build_messages",
    "config_from_args",
    "make_config",
    "resolve_model",
    "sampling_defaults",
    "split_thinking",
]
