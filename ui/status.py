"""The status line: what the engine is doing, each start-up phase with its seconds, and the
model, device, vLLM version and profile.

The phase shows as a coloured text badge (CSS below), so it needs no emoji font.
"""

from __future__ import annotations

import time

from engine.types import EngineStatus

CSS = """
.engine-phase { display: inline-block; padding: 0 0.55em; border-radius: 0.6em;
                font-weight: 600; color: #fff; background: #6b7280; }
.engine-phase.phase-ready { background: #15803d; }
.engine-phase.phase-loading, .engine-phase.phase-warming { background: #b45309; }
.engine-phase.phase-failed, .engine-phase.phase-stopping { background: #b91c1c; }
"""


def phase_badge(phase: str) -> str:
    """The phase name as a coloured badge (plain text where CSS is missing)."""
    return f'<span class="engine-phase phase-{phase}">{phase}</span>'


def startup_line(status: EngineStatus, now: float | None = None) -> str:
    """'model 0 s · import 9 s · engine 41 s so far': finished phases and the current one."""
    parts = [status.phases_text] if status.startup_phases else []
    if status.phase_started is not None and status.phase in ("loading", "warming"):
        elapsed = (now or time.time()) - status.phase_started
        parts.append(f"this phase {elapsed:.0f} s so far")
    return " · ".join(parts)


def api_line(api_port: int, model: str | None = None) -> str:
    """Where the HTTP API answers: the OpenAI-compatible routes, the metrics, the course's."""
    name = f" (model `{model}`)" if model else ""
    return (
        f"HTTP API on port **{api_port}**: OpenAI-compatible `/v1`{name} · Prometheus "
        "`/metrics` · course evaluator `GET /`, `POST /predict`"
    )


def status_markdown(
    status: EngineStatus, restarts: int = 0, api_port: int | None = None, closing: bool = False
) -> str:
    """A few lines of Markdown describing the engine's state (and where the API is)."""
    if closing:
        return f"{phase_badge('stopping')} the server is shutting down"
    head = f"{phase_badge(status.phase)} {status.message}"
    if status.progress is not None and status.phase != "ready":
        head += f" · {status.progress:.0%}"
    if status.phase in ("loading", "warming"):
        phases = startup_line(status)
        if phases:
            head += f"  \nstart-up: {phases}"
        head += "  \nThe page works meanwhile; chat and benchmark start once the engine is ready."
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
        if info.get("profile_reason"):
            head += f"  \nprofile `{info.get('profile', '?')}` {info['profile_reason']}"
        if info.get("idle_gpus"):
            head += f"  \n{info['idle_gpus']}"
    if restarts:
        head += f" · engine restarts: {restarts}"
    if api_port:
        head += "  \n" + api_line(api_port, info.get("served_model_name"))
    return head
