"""Fetch the official 358-question set once, check its SHA-256, and cache it.

The file is public but not ours to redistribute, so it is downloaded on the user's machine.
`QWEN_DEMO_EVAL_FILE` points at a local file instead (tests and offline machines use it); that
file is used whatever it holds, but only one with the official SHA-256 counts as the official
set (`is_official`): any other is labelled a custom set (`eval_data.sets.question_set_label`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from engine.models.cache import cache_root

OFFICIAL_URL = (
    "https://raw.githubusercontent.com/SLDRMK/GPU_LLM_Inference_Paratera/"
    "081022fc6a7b2c5df52305b7a2e884ebc43ba794/official_test_358.txt"
)
OFFICIAL_SHA256 = "59e519dde456a379bdbd619392dd4d0e516ee0d006a2dbfca23db40ce31770dd"
FILE_NAME = "official_test_358.txt"
ENV_FILE = "QWEN_DEMO_EVAL_FILE"


class DataError(RuntimeError):
    """The question set could not be had: offline, wrong hash, or a missing local file."""


def cache_dir() -> Path:
    """Where downloaded data lives (in the app's cache folder, `engine.models.cache`)."""
    return cache_root() / "eval_data"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_official(path: Path) -> bool:
    """Whether a file is the official question set, byte for byte (its SHA-256)."""
    return Path(path).is_file() and sha256_of(Path(path)) == OFFICIAL_SHA256


def local_question_set() -> Path | None:
    """The file that stands for the official set on this machine without a download:
    `QWEN_DEMO_EVAL_FILE`'s (unchecked here: `is_official` tells), else the verified cached
    copy, else None. Raises DataError where `QWEN_DEMO_EVAL_FILE` names a missing file."""
    local = os.environ.get(ENV_FILE)
    if local:
        if not Path(local).is_file():
            raise DataError(f"{ENV_FILE} points at a missing file: {local}")
        return Path(local)
    target = cache_dir() / FILE_NAME
    return target if is_official(target) else None


def official_question_set(url: str = OFFICIAL_URL, timeout: float = 30.0) -> Path:
    """Path of the official question file (`local_question_set`), downloading and checking it
    on first use."""
    local = local_question_set()
    if local is not None:
        return local
    target = cache_dir() / FILE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    _download(url, target, timeout)
    return target


def _download(url: str, target: Path, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
    except OSError as err:
        os.unlink(tmp)
        raise DataError(
            f"could not download the question set from {url}: {err}. "
            f"Offline? Set {ENV_FILE} to a local copy of {FILE_NAME}."
        ) from None
    got = sha256_of(Path(tmp))
    if got != OFFICIAL_SHA256:
        os.unlink(tmp)
        raise DataError(f"downloaded question set has SHA-256 {got}, expected {OFFICIAL_SHA256}")
    os.replace(tmp, target)
