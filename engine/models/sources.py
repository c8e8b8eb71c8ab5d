"""Where a model comes from: a local folder, a download, or a built-in random-weight Qwen3.

    python -m engine.models download Qwen/Qwen3-0.6B --out models/Qwen3-0.6B
    python -m engine.models build qwen3-0.6b-random --out models/qwen3-0.6b-random
    python -m engine.models tokenizer      # fetch Qwen3's tokenizer files once (./setup.sh does)

Names it understands:
- a folder with a `config.json`: used as it is;
- `tiny-random`: a 2-layer Qwen3 with Qwen3's own tokenizer and random weights, built offline
  in a second (the tokenizer files are fetched once by ./setup.sh); for tests and machines that
  cannot download;
- `qwen3-0.6b-random`: the real Qwen3-0.6B shape with random weights, for throughput work;
- anything else is a model id, downloaded from ModelScope (Hugging Face as fallback).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.models.cache import cache_root
from engine.models.qwen3_files import (
    TokenizerFilesError,
    is_current_build,
    qwen3_tokenizer_files,
    write_model_folder,
)

BUILT_IN = {"tiny-random": "tiny", "qwen3-0.6b-random": "qwen3-0.6b"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
MODEL_ID_FILE = ".model-id"  # in a downloaded folder: the id it came from

Progress = Callable[[str, float | None], None]  # (message, fraction 0..1 or None)


class ModelError(RuntimeError):
    """A model that cannot be had: bad folder, unknown id, or no network."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready for vLLM: its folder and whether its weights must be random."""

    name: str
    path: Path
    random_weights: bool
    source: str  # "local", "built-in", "modelscope", "huggingface"

    @property
    def served_name(self) -> str:
        """The name HTTP clients see: the model id or built-in name; for a folder, the id it
        was downloaded as (`python -m engine.models download` notes it), else its name."""
        if self.source != "local":
            return self.name
        noted = self.path / MODEL_ID_FILE
        if noted.is_file() and noted.read_text().strip():
            return noted.read_text().strip()
        return self.path.resolve().name


def models_dir() -> Path:
    """Where built and downloaded models are cached."""
    return cache_root() / "models"


def _quiet(message: str, fraction: float | None) -> None:
    pass


def resolve_model(name: str, progress: Progress = _quiet) -> ResolvedModel:
    """Turn a model name into a local folder, building or downloading it if needed."""
    if name in BUILT_IN:
        return ResolvedModel(name, build_builtin(name, progress=progress), True, "built-in")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: not a model folder")
        has_weights = any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir())
        return ResolvedModel(name, path, not has_weights, "local")
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelError(
            f"no model folder at {name!r}, and it is not a model id like 'Qwen/Qwen3-0.6B'"
        )
    cached = cached_model(name)
    if cached:
        return ResolvedModel(name, cached, False, "cache")
    target = model_dir(name)
    source = download_model(name, target, progress=progress)
    return ResolvedModel(name, target, False, source)


def model_dir(model_id: str) -> Path:
    """Where a downloaded model id lives."""
    return models_dir() / model_id.replace("/", "--")


def cached_model(model_id: str) -> Path | None:
    """The folder of a completely downloaded model id, or None."""
    target = model_dir(model_id)
    done = (target / "config.json").is_file() and (target / ".complete").is_file()
    return target if done else None


def can_download() -> bool:
    """Whether a model hub answers (a few seconds at most when offline)."""
    return any(reachable(host) for host in HUBS.values())


def build_builtin(name: str, target: Path | None = None, progress: Progress = _quiet) -> Path:
    """Build (once) the folder of a built-in random-weight model and return it."""
    target = Path(target or models_dir() / name)
    if is_current_build(target):
        return target
    progress(f"building {name} (Qwen3's own tokenizer files, random weights)", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return write_model_folder(target, BUILT_IN[name])
    except TokenizerFilesError as err:
        raise ModelError(str(err)) from None


def _tracker(progress: Progress, label: str):
    """A ModelScope progress-callback class that adds up bytes across files."""
    from modelscope.hub.callback import ProgressCallback

    state = {"done": 0, "total": 0}
    lock = threading.Lock()

    class Tracker(ProgressCallback):
        def __init__(self, filename: str, file_size: int):
            super().__init__(filename, file_size)
            with lock:
                state["total"] += file_size or 0

        def update(self, size: int) -> None:
            with lock:
                state["done"] += size
                done, total = state["done"], state["total"]
            progress(
                f"downloading {label}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB",
                done / total if total else None,
            )

    return Tracker


HUBS = {"modelscope": "modelscope.cn", "huggingface": "huggingface.co"}


def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether an HTTPS connection to `host` opens within `timeout` seconds."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def download_model(model_id: str, target: Path, progress: Progress = _quiet) -> str:
    """Download a model id into `target` (ModelScope, then Hugging Face); return the source."""
    if not can_download():
        raise ModelError(
            f"offline: cannot reach {' or '.join(HUBS.values())} to download "
            f"{model_id}. Pass --model with a local folder, or --model tiny-random."
        )
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    errors = []
    try:
        from modelscope import snapshot_download
        from modelscope.hub.callback import TqdmCallback

        progress(f"downloading {model_id} from ModelScope", 0.0)
        snapshot_download(
            model_id,
            local_dir=str(target),
            progress_callbacks=[TqdmCallback, _tracker(progress, model_id)],
        )
        source = "modelscope"
    except Exception as err:  # any failure: try the other hub before giving up
        errors.append(f"ModelScope: {type(err).__name__}: {err}")
        try:
            from huggingface_hub import snapshot_download as hf_download

            progress(f"downloading {model_id} from Hugging Face", None)
            hf_download(model_id, local_dir=str(target))
            source = "huggingface"
        except Exception as err2:
            errors.append(f"Hugging Face: {type(err2).__name__}: {err2}")
            raise ModelError(
                f"could not download {model_id} ({'; '.join(e[:300] for e in errors)}). "
                "Offline? Pass --model with a local folder, or --model tiny-random."
            ) from None
    if not (target / "config.json").is_file():
        raise ModelError(f"download of {model_id} has no config.json: not a model")
    (target / MODEL_ID_FILE).write_text(model_id)
    (target / ".complete").write_text(source)
    progress(f"downloaded {model_id}", 1.0)
    return source


def main(argv: list[str] | None = None) -> int:
    """Command line: download a model id, or build a built-in random model, into a folder."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download a model id (ModelScope, then Hugging Face)")
    dl.add_argument("model_id", help="e.g. Qwen/Qwen3-0.6B or SLDRMK/Qwen3-0.6B")
    dl.add_argument("--out", type=Path, required=True, help="folder to download into")
    build = sub.add_parser("build", help="write a built-in random-weight model folder")
    build.add_argument("name", choices=sorted(BUILT_IN))
    build.add_argument("--out", type=Path, required=True)
    sub.add_parser("tokenizer", help="fetch and check Qwen3's tokenizer files; print their folder")
    args = parser.parse_args(argv)

    def show(message: str, fraction: float | None) -> None:
        print(message, file=sys.stderr)

    try:
        if args.command == "download":
            download_model(args.model_id, args.out, progress=_quiet)
        elif args.command == "build":
            build_builtin(args.name, args.out, progress=show)
        else:
            args.out = qwen3_tokenizer_files()
    except (ModelError, TokenizerFilesError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
