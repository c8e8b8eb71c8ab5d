"""Stop signals as terminals, process managers and container runtimes send them.

Ctrl-C in a terminal sends SIGINT to the whole foreground process group; systemd sends SIGTERM
to every process of the service; `docker stop` and Kubernetes send SIGTERM to the container's
first process. The first SIGINT or SIGTERM starts an orderly stop (`wait` returns); a second
one, while the stop is slow, ends the app at once: every child process is killed and the app
exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports a
program the signal killed.
"""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Catches the stop signals from the moment it is made."""

    def __init__(self, on_force=None):
        self.received: int | None = None
        self._event = threading.Event()
        self._on_force = on_force  # called before the forced exit (e.g. to say so)
        for number in STOP_SIGNALS:
            signal.signal(number, self._handle)

    def _handle(self, number: int, frame) -> None:
        if self.received is None:
            self.received = number
            self._event.set()
            return
        if self._on_force is not None:
            self._on_force(number)
        kill_descendants()
        os._exit(128 + number)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "none"

    def wait(self, timeout: float | None = None) -> bool:
        """Until the first stop signal (or the timeout); whether one came."""
        return self._event.wait(timeout)

    def request(self, number: int = signal.SIGTERM) -> None:
        """A stop asked for from inside the app, as if `number` had arrived (once)."""
        if self.received is None:
            self._handle(number, None)


def kill_descendants() -> None:
    """SIGKILL every process this one started, and theirs."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
