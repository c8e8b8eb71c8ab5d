"""The status line: what the engine is doing, with model, device, vLLM version and profile."""

from __future__ import annotations

from engine import EngineStatus

ICONS = {
    "idle": "⏸️",
    "loading": "⏳",
    "warming": "🔥",
    "ready": "🟢",
    "failed": "🔴",
    "stopped": "⏹️",
}


def status_markdown(status: EngineStatus, restarts: int = 0) -> str:
    """One or two lines of Markdown describing the engine's state."""
    head = f"{ICONS.get(status.phase, '•')} **{status.phase}** — {status.message}"
    if status.progress is not None and status.phase != "ready":
        head += f" · {status.progress:.0%}"
    if status.phase in ("loading", "warming"):
        head += " · the page works meanwhile; chat and benchmark start once the engine is ready"
    info = status.info
    if info:
        model = info.get("model", "?")
        if info.get("random_weights"):
            model += " (random weights: replies are gibberish; throughput is real)"
        head += (
            f"  \nmodel **{model}** · device **{info.get('device', '?')}** · "
            f"vLLM {info.get('vllm', '?')} · profile `{info.get('profile', '?')}`"
        )
        if status.startup_seconds is not None:
            head += f" · start-up {status.startup_seconds:.0f} s"
    if restarts:
        head += f" · engine restarts: {restarts}"
    return head
