"""The folder the app keeps what it downloads or builds in: models, Qwen3's tokenizer files and
the official question set, each in a subfolder. `QWEN_DEMO_CACHE` moves it.

(vLLM's own caches follow vLLM's variables, e.g. `VLLM_CACHE_ROOT`; see `engine.models.modelinfo`.)
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "QWEN_DEMO_CACHE"


def default_cache_root() -> Path:
    """The cache folder when `QWEN_DEMO_CACHE` is not set."""
    return Path.home() / ".cache" / "qwen3-vllm-demo"


def cache_root() -> Path:
    """`QWEN_DEMO_CACHE`, else ~/.cache/qwen3-vllm-demo."""
    return Path(os.environ.get(ENV_CACHE) or default_cache_root()).expanduser()
