"""The orphan reaper: when the app dies without a chance to stop (`kill -9`, the OOM killer),
end the processes it left behind, so that no vLLM engine keeps holding the GPU.

vLLM's workers watch their engine-core process, but an engine core does not watch the app
that started it: after a `kill -9` of the app it would run on, and keep the GPU's memory,
until killed by hand. The app starts this small process first (`start_reaper`) and keeps a
pipe to it open; the reaper notes the app's descendants twice a second, and when the pipe
closes (the app is gone, however it ended) sends SIGTERM to the ones still alive, then
SIGKILL after a few seconds.

    python -m launch.reaper APP_PID      # its stdin is the pipe from the app
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

POLL_SECONDS = 0.5
GRACE_SECONDS = 3.0


def start_reaper() -> subprocess.Popen:
    """Start the reaper for this process; the returned process's stdin is the lifeline."""
    from launch.processes import keep

    reaper = subprocess.Popen(
        [sys.executable, "-m", "launch.reaper", str(os.getpid())],
        stdin=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    keep(reaper.pid)
    return reaper


def stop_reaper(reaper: subprocess.Popen, timeout: float = 5.0) -> None:
    """After a clean stop: wait for the app's other processes to end (killing any still there
    after `timeout`), then close the lifeline; the reaper finds nothing left and exits."""
    import psutil

    others = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid != reaper.pid and not _is_resource_tracker(p)
    ]
    _, alive = psutil.wait_procs(others, timeout=timeout)
    for process in alive:
        _quietly(process.kill)
    if reaper.stdin is not None:
        reaper.stdin.close()
    try:
        reaper.wait(timeout=GRACE_SECONDS + 5)
    except subprocess.TimeoutExpired:
        reaper.kill()


def watch(app_pid: int) -> int:
    """Note the app's descendants until stdin closes; then end those still alive."""
    import psutil

    # A stop signal to the whole group is the app's to handle; this process ends when the
    # app does.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    known: dict[int, float] = {}  # pid -> create time (a reused pid is not ours)
    me = os.getpid()
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL_SECONDS)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # the app closed the pipe or died
        try:
            for child in psutil.Process(app_pid).children(recursive=True):
                if child.pid != me and not _is_resource_tracker(child):
                    known.setdefault(child.pid, child.create_time())
        except psutil.Error:
            break  # the app is gone
    left = []
    for pid, created in known.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
        except psutil.Error:
            continue
    if not left:
        return 0
    names = ", ".join(sorted({_name(p) for p in left}))
    print(
        f"[reaper] the app ended; stopping {len(left)} process(es) it left: {names}",
        file=sys.stderr,
    )
    for process in left:
        _quietly(process.terminate)
    _, alive = psutil.wait_procs(left, timeout=GRACE_SECONDS)
    for process in alive:
        _quietly(process.kill)
    return 0


def _name(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())[:80] or process.name()
    except psutil.Error:
        return str(process.pid)


def _is_resource_tracker(process) -> bool:
    """multiprocessing's resource tracker, which ends by itself once the app is gone."""
    import psutil

    try:
        return "resource_tracker" in " ".join(process.cmdline())
    except psutil.Error:
        return True


def _quietly(action) -> None:
    import psutil

    try:
        action()
    except psutil.Error:
        pass


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1])))
