"""engine.models: built-in random models, local folders, and downloads that fail fast offline."""

import json
import time

import pytest

from engine.models import ModelError, build_builtin, main, resolve_model


def test_tiny_random_is_built_once_with_the_real_special_tokens(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["head_dim"] == 64 and config["vocab_size"] == 151936
    resolved = resolve_model("tiny-random")
    assert resolved.random_weights and resolved.path == tiny_model_dir
    assert build_builtin("tiny-random") == tiny_model_dir  # cached, not rebuilt


def test_full_size_random_model_has_qwen3_0_6b_shape(tmp_path):
    path = build_builtin("qwen3-0.6b-random", tmp_path / "q")
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (
        1024,
        28,
        8,
    )


def test_local_folder_without_weights_runs_with_random_weights(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.source == "local" and resolved.random_weights


def test_bad_names_fail_clearly(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="not a model id"):
        resolve_model("./missing/folder/x")


def test_download_fails_at_once_offline(tmp_path, capsys):
    started = time.monotonic()
    with pytest.raises(ModelError, match="offline"):
        resolve_model("Qwen/Qwen3-0.6B")
    assert time.monotonic() - started < 15
    assert main(["download", "SLDRMK/Qwen3-0.6B", "--out", str(tmp_path / "m")]) == 1
    assert "offline" in capsys.readouterr().err
