"""What the page tells a visitor when a request cannot be done: a Gradio error toast, with no
server-side traceback (these are answers, not faults)."""

from __future__ import annotations

import gradio as gr


def visitor_error(message: str) -> gr.Error:
    """The error to raise from a handler so that the visitor reads `message`."""
    return gr.Error(message, print_exception=False)
