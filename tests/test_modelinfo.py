"""engine.models.modelinfo: the side process writes the cache entry that vLLM itself then
accepts."""

import json
import os
import subprocess
import sys

from engine.models import modelinfo

# What vLLM's own start-up does with the entry: find it, check its hash, use it.
VLLM_LOOKUP = """
import importlib.util, sys
from pathlib import Path
from vllm.model_executor.models.registry import ModelRegistry
entry = ModelRegistry.models[sys.argv[1]]
origin = Path(importlib.util.find_spec(entry.module_name).origin)
info = entry._load_modelinfo_from_cache(entry._get_modelinfo_module_hash(origin))
print("hit" if info is not None else "miss", info.is_text_generation_model if info else "")
"""


def vllm_lookup(architecture: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", VLLM_LOOKUP, architecture],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_side_process_fills_the_cache_vllm_reads(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm"))
    env = dict(os.environ)
    assert modelinfo.architectures(tiny_model_dir) == ["Qwen3ForCausalLM"]
    assert not modelinfo.is_cached("Qwen3ForCausalLM")
    assert vllm_lookup("Qwen3ForCausalLM", env).startswith("miss")

    side = modelinfo.start(tiny_model_dir)
    assert side is not None
    modelinfo.wait(side, timeout=300)
    assert side.returncode == 0
    written = tmp_path / "vllm" / "modelinfos"
    assert [p.name for p in written.iterdir()] == [
        "vllm-model_executor-models-qwen3-Qwen3ForCausalLM.json"
    ]
    assert vllm_lookup("Qwen3ForCausalLM", env) == "hit True"
    assert modelinfo.start(tiny_model_dir) is None  # nothing left to do


def test_folders_without_a_usable_config_start_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm"))
    assert modelinfo.start(tmp_path) is None  # no config.json
    (tmp_path / "config.json").write_text("{not json")
    assert modelinfo.architectures(tmp_path) == []
    (tmp_path / "config.json").write_text(json.dumps({"architectures": "Qwen3ForCausalLM"}))
    assert modelinfo.start(tmp_path) is None  # a string, not a list of names
    assert modelinfo.wait(None, timeout=1) == 0.0


def test_an_unknown_architecture_leaves_the_cache_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm"))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["NoSuchModel"]}))
    side = modelinfo.start(tmp_path)
    modelinfo.wait(side, timeout=300)
    assert side.returncode == 1
    assert not (tmp_path / "vllm" / "modelinfos").exists()


def test_a_side_process_past_its_time_is_stopped(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm"))
    side = modelinfo.start(tiny_model_dir)
    waited = modelinfo.wait(side, timeout=0.5)
    assert waited < 30 and side.returncode is not None and side.returncode < 0  # killed
