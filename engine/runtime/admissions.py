"""Requests let in and not yet let go, counted for the one admission limit: in this process
alone, or over every API process of the app (`--api-processes`): one shared array with an
entry per client slot, summed under its lock, so that the limit holds for the app as a whole
and the entry of an API process that died can be cleared."""

from __future__ import annotations

import os
from contextlib import contextmanager


class LocalCount:
    """The count of a process that serves alone."""

    def __init__(self):
        self.value = 0

    def reserve(self, count: int, limit: int, floor: int) -> int | None:
        """Add `count` if the total (at least `floor`) leaves room under `limit`; else the
        total, unchanged."""
        queued = max(self.value, floor)
        if queued + count > limit:
            return queued
        self.value += count
        return None

    def release(self, count: int) -> None:
        self.value -= count


class SharedCounts:
    """The counts of every client slot, in shared memory, guarded by a file lock (`flock`:
    released by the kernel when a holder dies, and nothing left to clean up at exit, unlike a
    named semaphore). Made by the main process, handed to the API processes it starts."""

    def __init__(self, slots: int):
        import multiprocessing
        import tempfile

        self.values = multiprocessing.get_context("spawn").RawArray("q", slots)
        fd, self.lock_path = tempfile.mkstemp(prefix="qwen3-demo-admit-", suffix=".lock")
        os.close(fd)
        self._fd: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}  # each process opens the lock file itself

    @contextmanager
    def locked(self):
        import fcntl

        if self._fd is None:
            self._fd = os.open(self.lock_path, os.O_RDWR)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield self.values
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def clear(self, index: int | None = None) -> None:
        """Forget what a process that is gone held (its entry, or every entry)."""
        with self.locked() as values:
            for i in range(len(values)) if index is None else [index]:
                values[i] = 0


class SharedCount:
    """This process's entry (`index`, its client slot) in the counts all API processes share."""

    def __init__(self, counts: SharedCounts, index: int):
        self.counts, self.index = counts, index

    def reserve(self, count: int, limit: int, floor: int) -> int | None:
        with self.counts.locked() as values:
            queued = max(sum(values), floor)
            if queued + count > limit:
                return queued
            values[self.index] += count
        return None

    def release(self, count: int) -> None:
        with self.counts.locked() as values:
            values[self.index] -= count
