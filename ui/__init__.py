"""The Gradio UI: a status line, the Chat tab and the Benchmark tab over one engine service.

No vLLM here: the UI talks to `engine.EngineService` only.
"""

from __future__ import annotations

import gradio as gr

from engine import EngineService
from ui.benchmark import build_benchmark_tab
from ui.chat import build_chat_tab
from ui.status import CSS, status_markdown

__all__ = ["CSS", "build_ui"]

TITLE = "Qwen3-0.6B on vLLM — chat and benchmark"


def build_ui(service: EngineService, api_port: int | None = None) -> gr.Blocks:
    """Build the Blocks app (not launched)."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"## {TITLE}")
        with gr.Row():
            status = gr.Markdown(
                status_markdown(service.status(), api_port=api_port), elem_id="engine-status"
            )
            restart = gr.Button("Restart engine", size="sm", scale=0, elem_id="restart-engine")
        timer = gr.Timer(1.0)
        timer.tick(
            lambda: status_markdown(service.status(), service.restarts, api_port),
            None,
            status,
            api_visibility="private",
            queue=False,
        )

        def restart_engine():
            service.restart()
            return status_markdown(service.status(), service.restarts, api_port)

        restart.click(restart_engine, None, status, api_name="restart_engine")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                build_chat_tab(service)
            with gr.Tab("Benchmark", id="benchmark"):
                build_benchmark_tab(service)
    return demo
