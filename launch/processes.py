"""The engine's child processes: keep vLLM's processes out of the app's process group, and end
them (engine cores, their workers, the data-parallel coordinator) when a build or a shutdown
cannot end them itself.

Why a process group of their own (`isolate_engine_processes`): Ctrl-C in a terminal, and
`kill -- -PGID`, signal every process of the group at once. vLLM's worker processes exit at
once on SIGINT or SIGTERM, while their engine core may be in the middle of a step; the engine
core then logs a fatal error with a traceback. Outside the group, vLLM's processes hear only
the app, which stops them in order: requests first, then the engine core, then its workers.

Processes the app starts for other jobs (the UI process, the orphan reaper) are registered
with `keep` and never ended here.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

_kept: set[int] = set()
_nice = 0  # what forked children add to their nice value (isolate_engine_processes)


def isolate_engine_processes(nice: int = 0) -> str | None:
    """Start every process that multiprocessing starts from now on (vLLM's engine processes)
    in a process group of its own, however it starts them: vLLM forks its engine core where
    CUDA is not initialized yet (the app's own process, on a GPU) and spawns it elsewhere (its
    CPU build, and every process it starts with `spawn`). `nice` above 0 lowers their
    scheduling priority by that much, every thread of theirs included (`EngineConfig.engine_nice`).
    Returns the launcher that spawned processes start through (None where a shebang line cannot
    carry the interpreter's path)."""
    global _nice
    _nice = nice
    os.register_at_fork(after_in_child=_own_group)
    python = sys.executable
    if len(python) > 200 or " " in python:  # a shebang line cannot carry it
        return None
    folder = Path(tempfile.gettempdir()) / f"qwen3-demo-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.sha256(f"{python} {nice}".encode()).hexdigest()[:12]
    launcher = folder / f"python-own-group-{digest}"
    text = (
        f"#!{python} -S\n"
        "import os, sys\n"
        "os.setpgid(0, 0)\n"
        + (f"os.nice({nice})\n" if nice else "")
        + f"os.execv({python!r}, [{python!r}, *sys.argv[1:]])\n"
    )
    if not launcher.is_file() or launcher.read_text() != text:
        staged = launcher.with_suffix(f".{os.getpid()}")
        staged.write_text(text)
        staged.chmod(0o755)
        staged.replace(launcher)
    multiprocessing.set_executable(str(launcher))
    return str(launcher)


def _own_group() -> None:
    """In a child just forked by Python (`os.fork`: multiprocessing's fork start method, never
    `subprocess`, whose children keep the app's group and hear the terminal): a group of its
    own, and the engine's priority."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if _nice:
        os.nice(_nice)


def keep(pid: int) -> None:
    """Leave this child (and its own children) alone in `stop_engine_processes`."""
    _kept.add(pid)


ENGINE_MARKS = ("VLLM::", "multiprocessing.spawn", "multiprocessing.forkserver")


def engine_processes() -> list:
    """The engine's processes: this process's children that vLLM started (named `VLLM::...`
    once running, `multiprocessing.spawn` before) and theirs; never a kept child, nor
    multiprocessing's resource tracker, which ends by itself once its users are gone, nor
    anything under other children (another app that a test runner started, say)."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=False):
        if child.pid in _kept:
            continue
        try:
            line = " ".join([child.name(), *child.cmdline()])
        except psutil.Error:
            continue
        if "resource_tracker" not in line and any(mark in line for mark in ENGINE_MARKS):
            found += [child, *_safe_children(child)]
    return found


def _safe_children(process) -> list:
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def stop_engine_processes(timeout: float = 5.0) -> int:
    """SIGTERM the engine's processes, SIGKILL those left after `timeout`; how many there were."""
    import psutil

    found = engine_processes()
    for process in found:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(found, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=2)
    return len(found)
