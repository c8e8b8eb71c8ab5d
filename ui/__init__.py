"""The Gradio UI: a status line, the Chat tab and the Benchmark tab, in processes of their own.

No vLLM here, and no engine: the UI talks to the server over its private socket
(`ui.backend`), so that Gradio's work for hundreds of browsers never competes with the
engine's front end for one Python interpreter. `python -m ui` is one UI worker
(`ui.__main__`); `--ui-workers N` runs N of them behind one front (`launch.ui_front`).

| module | job |
|---|---|
| `backend` | the server's private API: status (polled), chat and benchmark streams, restart |
| `chat` | the Chat tab and its handler (redraws paced by load) |
| `benchmark` | the Benchmark tab: questions, live charts, results |
| `status` | the status line |
| `operator` | who may restart the engine and run benchmarks |
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui.backend import Backend, BackendError
from ui.benchmark import build_benchmark_tab
from ui.chat import UpdatePacer, build_chat_tab
from ui.errors import visitor_error
from ui.operator import OperatorPolicy
from ui.status import CSS, status_markdown

__all__ = ["CSS", "UiSettings", "build_ui"]

TITLE = "Qwen3-0.6B on vLLM — chat and benchmark"
STATUS_SECONDS = 2.0


@dataclass(frozen=True)
class UiSettings:
    """What the page needs to know of the server it fronts."""

    policy: OperatorPolicy
    api_port: int | None = None
    max_new_tokens_cap: int = 2048


def build_ui(backend: Backend, settings: UiSettings, pacer: UpdatePacer | None = None) -> gr.Blocks:
    """Build the Blocks app (not launched); `pacer` counts the replies streaming now."""
    policy = settings.policy
    pacer = pacer or UpdatePacer()

    def status_now() -> str:
        return status_markdown(
            backend.status(), backend.restarts, settings.api_port, backend.closing
        )

    with gr.Blocks(title=TITLE) as demo:
        unlocked = gr.State(False)  # this session entered the operator key
        gr.Markdown(f"## {TITLE}")
        with gr.Row():
            status = gr.Markdown(status_now(), elem_id="engine-status")
            restart = gr.Button(
                "Restart engine",
                size="sm",
                scale=0,
                elem_id="restart-engine",
                visible=policy.open,
            )
        if not policy.open:
            with gr.Accordion("Operator", open=False, elem_id="operator"):
                note = gr.Markdown(policy.locked_reason, elem_id="operator-note")
                key = gr.Textbox(
                    label="Operator key",
                    type="password",
                    elem_id="operator-key",
                    visible=bool(policy.key),
                )
                unlock = gr.Button("Unlock", elem_id="operator-unlock", visible=bool(policy.key))

            def check(given: str):
                ok = policy.check_key(given)
                told = (
                    "Operator controls unlocked for this page."
                    if ok
                    else ("Wrong operator key." if given else policy.locked_reason)
                )
                return ok, told, gr.update(visible=ok), ""

            unlock.click(check, key, [unlocked, note, restart, key], api_name="unlock_operator")
        gr.Timer(STATUS_SECONDS).tick(
            status_now, None, status, api_visibility="private", queue=False
        )

        async def restart_engine(allowed: bool):
            if not policy.allowed(allowed):
                raise visitor_error(policy.locked_reason)
            try:
                await backend.restart()
            except BackendError as err:
                raise visitor_error(str(err)) from None
            return status_now()

        restart.click(restart_engine, unlocked, status, api_name="restart_engine")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                build_chat_tab(backend, settings.max_new_tokens_cap, pacer)
            with gr.Tab("Benchmark", id="benchmark"):
                build_benchmark_tab(backend, policy, unlocked)
    return demo
