"""Fill vLLM's model-info cache in a side process while this one imports vLLM.

On a machine whose vLLM cache is empty, building the engine first inspects the model class
in a fresh Python process (vLLM keeps CUDA out of the caller that way) and caches the result
under `$VLLM_CACHE_ROOT/modelinfos`. That process imports vLLM from scratch: about 25 s of a
90 s first start on the H100 (BENCHMARKS.md). Started at the same moment as the app's own
import of vLLM, the same inspection overlaps it instead of following it.

    side = start(model_path)      # None when the cache already has the model's class
    ...import vLLM...
    wait(side, timeout=120)       # then vLLM finds the cache and skips its own inspection

`python -m engine.models.modelinfo ARCHITECTURE` fills the cache for one architecture and
exits; any failure leaves the cache as it was, and vLLM inspects the class itself as usual.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def cache_dir() -> Path:
    """vLLM's model-info cache folder, from the same variables vLLM reads."""
    root = os.environ.get("VLLM_CACHE_ROOT")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "vllm")
    return Path(root).expanduser() / "modelinfos"


def architectures(model_path: str | Path) -> list[str]:
    """The architectures a model folder's config.json names (empty when it names none)."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = config.get("architectures") if isinstance(config, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def is_cached(architecture: str) -> bool:
    """Whether vLLM's cache holds an entry for this class (vLLM itself checks it is current)."""
    folder = cache_dir()
    return folder.is_dir() and any(folder.glob(f"*-{architecture}.json"))


def start(model_path: str | Path) -> subprocess.Popen | None:
    """Start filling the cache for the model's class; None when there is nothing to do."""
    missing = [a for a in architectures(model_path)[:1] if not is_cached(a)]
    if not missing:
        return None
    code = f"import sys, engine.models.modelinfo as m; sys.exit(m.main({missing[0]!r}))"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],  # the checkout, where `engine` imports from
    )


def wait(side: subprocess.Popen | None, timeout: float) -> float:
    """Wait for the side process (killed after `timeout` seconds); returns seconds waited."""
    began = time.monotonic()
    if side is None:
        return 0.0
    try:
        side.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        side.kill()
        side.communicate()
    return time.monotonic() - began


def fill(architecture: str) -> bool:
    """Inspect one architecture's class here and write vLLM's cache entry; True if written."""
    from vllm.model_executor.models import registry

    entry = registry.ModelRegistry.models.get(architecture)
    if entry is None or not hasattr(entry, "_save_modelinfo_to_cache"):
        return False  # unknown here, or already imported in-process: vLLM needs no cache
    import importlib.util

    spec = importlib.util.find_spec(entry.module_name)
    if spec is None or not spec.origin:
        return False
    module_hash = entry._get_modelinfo_module_hash(Path(spec.origin))
    if entry._load_modelinfo_from_cache(module_hash) is not None:
        return False
    info = registry._ModelInfo.from_model_cls(entry.load_model_cls())
    entry._save_modelinfo_to_cache(info, module_hash)
    return True


def main(architecture: str) -> int:
    """Exit status for the side process: 0 when it wrote the cache entry."""
    return 0 if fill(architecture) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m engine.models.modelinfo ARCHITECTURE")
    sys.exit(main(sys.argv[1]))
