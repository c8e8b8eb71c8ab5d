"""engine.models.sources: built-in random models, local folders, and downloads that fail fast
offline."""

import functools
import hashlib
import json
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.models.sources import ModelError, build_builtin, main, resolve_model
from tests.conftest import free_port


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


def test_tokenizer_files_are_checked_and_a_missing_copy_is_explained(tmp_path, monkeypatch):
    from engine.models.qwen3_files import (
        ENV_DIR,
        TOKENIZER_FILES,
        TokenizerFilesError,
        qwen3_tokenizer_files,
    )

    good = qwen3_tokenizer_files()  # fetched by setup.sh
    assert sorted(p.name for p in good.iterdir()) == sorted(TOKENIZER_FILES)
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "none"))
    with pytest.raises(TokenizerFilesError, match=ENV_DIR):
        qwen3_tokenizer_files()
    with pytest.raises(ModelError, match="tokenizer"):
        build_builtin("tiny-random", tmp_path / "m")
    assert not (tmp_path / "m").exists()
    altered = tmp_path / "altered"
    shutil.copytree(good, altered)
    (altered / "tokenizer.json").write_bytes(b"{}")
    monkeypatch.setenv(ENV_DIR, str(altered))
    with pytest.raises(TokenizerFilesError, match="SHA-256"):
        qwen3_tokenizer_files()


def test_fetching_the_tokenizer_fails_clearly(tmp_path, monkeypatch):
    """Offline, and a server that hands out other bytes: each says what went wrong."""
    from engine.models.qwen3_files import ENV_DIR, TokenizerFilesError, qwen3_tokenizer_files

    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.setenv("QWEN_DEMO_CACHE", str(tmp_path / "cache"))  # no fetched copy here
    with pytest.raises(TokenizerFilesError, match=r"could not be fetched .*Run ./setup.sh"):
        qwen3_tokenizer_files(url=f"http://127.0.0.1:{free_port()}/t.tgz", timeout=5)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "t.tgz").write_bytes(b"not the package")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/t.tgz"
        with pytest.raises(TokenizerFilesError, match="SHA-256"):
            qwen3_tokenizer_files(url=url, timeout=5)
        server.shutdown()


def test_one_cache_folder_holds_models_tokenizer_files_and_data(tmp_path, monkeypatch):
    from engine.models.qwen3_files import ENV_DIR, tokenizer_dir
    from engine.models.sources import models_dir
    from eval_data.download import cache_dir

    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.setenv("QWEN_DEMO_CACHE", str(tmp_path))
    assert models_dir() == tmp_path / "models"
    assert tokenizer_dir().parent == tmp_path / "tokenizers"
    assert cache_dir() == tmp_path / "eval_data"
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "elsewhere"))
    assert tokenizer_dir() == tmp_path / "elsewhere"


def test_a_built_in_folder_from_an_older_tokenizer_is_rebuilt(tmp_path):
    from engine.models.qwen3_files import BUILD_STAMP, TOKENIZER_FILES

    path = build_builtin("tiny-random", tmp_path / "t")
    (path / BUILD_STAMP).write_text("dashscope ranks")  # as an older build
    (path / "tokenizer.json").write_text("{}")
    assert build_builtin("tiny-random", path) == path
    digest = hashlib.sha256((path / "tokenizer.json").read_bytes()).hexdigest()
    assert digest == TOKENIZER_FILES["tokenizer.json"]


def test_served_names_are_ids_built_in_names_or_folder_names(tmp_path, tiny_model_dir):
    from engine.models.sources import MODEL_ID_FILE, ResolvedModel

    assert resolve_model("tiny-random").served_name == "tiny-random"
    assert ResolvedModel("Qwen/Qwen3-0.6B", tmp_path, False, "cache").served_name == (
        "Qwen/Qwen3-0.6B"
    )
    folder = tmp_path / "my-model"
    shutil.copytree(tiny_model_dir, folder)
    assert resolve_model(str(folder)).served_name == "my-model"
    (folder / MODEL_ID_FILE).write_text("SLDRMK/Qwen3-0.6B\n")  # `download` notes its id
    assert resolve_model(str(folder)).served_name == "SLDRMK/Qwen3-0.6B"
