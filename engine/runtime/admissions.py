"""Requests let in and not yet let go, counted for the one admission limit: in this process
alone, or over every API process of the app (`--api-processes`): one shared array with an
entry per client slot, summed under its lock, so that the limit holds for the app as a whole
and the entry of an API process that died can be cleared."""

from __future__ import annotations


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


class SharedCount:
    """This process's entry (`index`, its client slot) in the array all API processes share."""

    def __init__(self, array, index: int):
        self.array, self.index = array, index

    @staticmethod
    def make(slots: int):
        """The shared array for `slots` client slots (made before the processes start)."""
        import multiprocessing

        return multiprocessing.get_context("spawn").Array("q", slots)

    @property
    def value(self) -> int:
        return self.array[self.index]

    def reserve(self, count: int, limit: int, floor: int) -> int | None:
        with self.array.get_lock():
            queued = max(sum(self.array), floor)
            if queued + count > limit:
                return queued
            self.array[self.index] += count
        return None

    def release(self, count: int) -> None:
        with self.array.get_lock():
            self.array[self.index] -= count


def clear(array, index: int | None = None) -> None:
    """Forget what a process that is gone held (its entry, or every entry)."""
    with array.get_lock():
        for i in range(len(array)) if index is None else [index]:
            array[i] = 0
