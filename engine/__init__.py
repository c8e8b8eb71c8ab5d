"""All vLLM code: settings, model sources, Qwen3's prompt and reasoning rules, the runtime.

Nothing here imports Gradio or serves HTTP. Importing the package costs nothing: its public
names below are loaded on first use, so `import engine.types` (what a UI worker needs) does not
bring in the runtime, and vLLM itself is imported only when an engine starts.

- `settings/`: `EngineConfig` (`config`, the one validated settings object), named profiles
  and the automatic choice per GPU family (`profiles`), the command-line flags (`flags`),
  which GPUs and which vLLM build are here (`devices`).
- `models/`: model sources: a local folder, a download (ModelScope first), the built-in
  random-weight models (`sources`); Qwen3's tokenizer files (`qwen3_files`); the cache folder
  (`cache`); vLLM's model inspection ahead of time (`modelinfo`). `python -m engine.models`.
- `qwen3/`: Qwen3's rules: messages to token ids, thinking on or off and its sampling, the
  context's limit (`prompt`); reasoning split from the answer, whole or streamed (`reasoning`).
- `runtime/`: the one engine object (`engine`: start, admission, streaming, batches; the
  `lifecycle` it holds: build, status, health, shutdown), the start-up `warmup`, the
  `service` (its loop thread, watchdog, restarts), vLLM's arguments (`vllm_args`), stats per
  rank (`stats`), daemon-thread builds (`threads`).
- `types`: value types and errors shared with the HTTP layer and the UI (no vLLM).

Process policy (process groups, ending vLLM's processes, data-parallel ranks on other hosts)
is in `launch/`.
"""

from importlib import import_module

_HOMES = {
    "DEFAULT_SYSTEM_PROMPT": "engine.qwen3.prompt",
    "build_messages": "engine.qwen3.prompt",
    "sampling_defaults": "engine.qwen3.prompt",
    "answer_text": "engine.qwen3.reasoning",
    "split_thinking": "engine.qwen3.reasoning",
    "BENCH_BATCH": "engine.settings.config",
    "DEFAULT_MODEL": "engine.settings.config",
    "EngineConfig": "engine.settings.config",
    "add_config_arguments": "engine.settings.flags",
    "config_from_args": "engine.settings.flags",
    "PROFILE_NAMES": "engine.settings.profiles",
    "make_config": "engine.settings.profiles",
    "ModelError": "engine.models.sources",
    "resolve_model": "engine.models.sources",
    "Engine": "engine.runtime.engine",
    "EngineService": "engine.runtime.service",
    **dict.fromkeys(
        (
            "GREEDY",
            "Chunk",
            "Completion",
            "EngineBusy",
            "EngineStatus",
            "EngineUnavailable",
            "GenerationParams",
            "RequestError",
            "ServerStopping",
        ),
        "engine.types",
    ),
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """A public name, imported from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value
