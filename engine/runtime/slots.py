"""vLLM's engine core started for several clients: the app's own and its API processes.

vLLM's multi-API-server mode (`vllm serve --api-server-count N`) as the app uses it: this
process binds one pair of ZMQ listeners (requests in, outputs back) per client slot, starts
vLLM's engine core processes on them (`launch_core_engines`, data-parallel ranks and their
coordinator included), and hands each slot to one client: slot 0 to its own `AsyncLLM`, the
others to API processes (`launch.api_processes`), each with an `AsyncLLM` of its own, so that
the per-token work of the front end (detokenizing, the HTTP streams) is spread over processes.

Spare slots: an engine core greets each slot's client once, when it starts, and a client that
connects later waits for that greeting; a client that replaces a dead one on the same slot
never gets it (vLLM 0.32, measured: it times out). So a few more slots than clients are
started, and a replacement takes a fresh one: its greeting is waiting for it.

    slots = EngineSlots.start(vllm_config, count=4, log_stats=True)   # blocks until up
    llm = AsyncLLM.from_vllm_config(vllm_config, **slots.take().client_kwargs())
    slots.shutdown()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPARE_SLOTS = 4  # replacements for API processes that die, per engine


@dataclass
class Slot:
    """One client's place at the engine core: its index and (once taken) its listeners."""

    index: int
    count: int
    addresses: dict[str, Any] = field(default_factory=dict)

    def client_kwargs(self) -> dict:
        """`AsyncLLM.from_vllm_config`'s arguments for a client on this slot."""
        return {
            "client_addresses": self.addresses,
            "client_count": self.count,
            "client_index": self.index,
        }


class EngineSlots:
    """The engine core processes and the client slots bound for them."""

    def __init__(self, listeners, launch, count: int):
        self._listeners = listeners
        self.engine_manager = launch.engine_manager
        self.coordinator = launch.coordinator
        self.count = count
        self._next = 0

    @classmethod
    def start(cls, vllm_config, count: int, log_stats: bool) -> EngineSlots:
        """Bind `count` slots and start the engine core(s) on them; returns once they are up
        (blocking: minutes on a first start)."""
        from vllm.v1.engine.utils import bind_engine_zmq_listeners, launch_core_engines
        from vllm.v1.executor import Executor

        listeners = bind_engine_zmq_listeners(vllm_config, count)
        try:
            executor = Executor.get_class(vllm_config)
            with launch_core_engines(
                vllm_config, executor, log_stats, listeners.addresses
            ) as launch:
                pass
        except BaseException:
            listeners.cleanup()
            raise
        return cls(listeners, launch, count)

    def take(self) -> Slot | None:
        """The next free slot with copies of its listeners (the caller's own client adopts
        them, or a process it starts: then `release_listeners` closes the caller's copies),
        None when every slot is taken."""
        if self._next >= self.count:
            return None
        i = self._next
        self._next += 1
        addresses = {
            "input_address": self._listeners.inputs[i].address,
            "output_address": self._listeners.outputs[i].address,
            "input_listener": self._listeners.inputs[i].socket.dup(),
            "output_listener": self._listeners.outputs[i].socket.dup(),
        }
        if self.coordinator is not None:
            addresses["stats_update_address"] = self.coordinator.get_stats_publish_address()
        return Slot(i, self.count, addresses)

    def release_listeners(self, slot: Slot) -> None:
        """Close this process's copy of a slot's listeners once a started process holds them."""
        for key in ("input_listener", "output_listener"):
            sock = slot.addresses.get(key)
            if sock is not None:
                sock.close()

    def dead(self) -> str | None:
        """Which engine core process has ended (while the slots are meant to be up), if any."""
        if self.engine_manager is None:
            return None
        finished = self.engine_manager.finished_procs()
        return next(iter(finished), None)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the engine core processes (and the coordinator); the listeners go too."""
        if self.engine_manager is not None:
            self.engine_manager.shutdown(timeout=timeout)
        if self.coordinator is not None:
            self.coordinator.shutdown(timeout=timeout)
        self._listeners.cleanup()
