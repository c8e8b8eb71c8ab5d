"""The Chat tab: streaming replies from the shared engine, thinking shown as a foldable block.

Every user's request goes straight into the engine's batch (no queue in front of it); Stop
cancels the handler, which aborts the request inside vLLM.
"""

from __future__ import annotations

import gradio as gr

from engine import (
    DEFAULT_SYSTEM_PROMPT,
    EngineBusy,
    EngineService,
    EngineUnavailable,
    GenerationParams,
    RequestError,
    build_messages,
    sampling_defaults,
    split_thinking,
)

THINKING_TITLE = "Thinking"
MAX_MESSAGE_CHARS = 100_000
EXAMPLES = [
    "什么是 CUDA 中的 warp？warp divergence 为什么会降低性能？",
    "共享内存的 bank conflict 是怎么产生的？如何避免？",
    "Explain in three sentences how a KV cache speeds up LLM decoding.",
]


def message_text(content) -> str:
    """Plain text of a Gradio message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "") if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return ""


def model_history(history: list[dict]) -> list[dict]:
    """The turns the model sees: user and answer text only, no thinking or stats boxes."""
    turns = []
    for message in history or []:
        if (message.get("metadata") or {}).get("title"):
            continue
        text = message_text(message.get("content"))
        if message.get("role") in ("user", "assistant") and text:
            turns.append({"role": message["role"], "content": text})
    return turns


def reply_messages(text: str, stats: str | None = None) -> list[dict]:
    """Chatbot messages for a reply so far: thinking (foldable), answer, then figures."""
    reasoning, answer, finished = split_thinking(text)
    messages = []
    if reasoning or not finished:
        messages.append(
            {
                "role": "assistant",
                "content": reasoning,
                "metadata": {"title": THINKING_TITLE, "status": "done" if finished else "pending"},
            }
        )
    if answer or finished:
        messages.append({"role": "assistant", "content": answer})
    if stats:
        messages.append({"role": "assistant", "content": "", "metadata": {"title": stats}})
    return messages


def reply_stats(output_tokens: int, ttft_s: float | None, elapsed_s: float) -> str:
    """'N tokens · TTFT x s · y tok/s' for under a reply (decode rate after the first token)."""
    rate = (
        (output_tokens - 1) / (elapsed_s - ttft_s)
        if ttft_s is not None and output_tokens > 1 and elapsed_s > ttft_s
        else 0.0
    )
    ttft = "n/a" if ttft_s is None else f"{ttft_s:.2f} s"
    return f"{output_tokens} tokens · TTFT {ttft} · {rate:.1f} tok/s"


def make_respond(service: EngineService):
    """The chat handler bound to the shared engine service."""

    async def respond(
        message: str,
        history: list[dict],
        system_prompt: str,
        thinking: bool,
        temperature: float,
        top_p: float,
        top_k: int,
        max_new_tokens: int,
    ):
        if not isinstance(message, str) or not message.strip():
            raise gr.Error("Type a message first.")
        if len(message) > MAX_MESSAGE_CHARS:
            raise gr.Error(
                f"The message has {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}."
            )
        status = service.status()
        if not status.ready:
            raise gr.Error(f"The engine is not ready yet ({status.phase}: {status.message}).")
        try:
            params = GenerationParams(
                int(max_new_tokens), float(temperature), float(top_p), int(top_k)
            )
            params.validate()
        except (TypeError, ValueError) as err:
            raise gr.Error(f"Bad sampling settings: {err}") from None
        messages = build_messages(model_history(history), message, system_prompt or None)
        text, chunk = "", None
        try:
            async for chunk in service.stream_chat(messages, params, bool(thinking)):
                text += chunk.text
                yield reply_messages(text)
        except (RequestError, EngineUnavailable, EngineBusy) as err:
            raise gr.Error(str(err)) from None
        stats = reply_stats(chunk.output_tokens, chunk.ttft_s, chunk.elapsed_s) if chunk else None
        yield reply_messages(text, stats)

    return respond


def build_chat_tab(service: EngineService) -> None:
    """Lay out the Chat tab inside the current Blocks context."""
    think, plain = sampling_defaults(True), sampling_defaults(False)
    cap = service.config.max_new_tokens_cap
    with gr.Accordion("Settings", open=False):
        system_prompt = gr.Textbox(DEFAULT_SYSTEM_PROMPT, label="System prompt", lines=2)
        with gr.Row():
            thinking = gr.Checkbox(True, label="Thinking (reasoning shown folded)")
            temperature = gr.Slider(0.0, 2.0, think.temperature, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, think.top_p, step=0.05, label="Top-p")
            top_k = gr.Slider(-1, 200, think.top_k, step=1, label="Top-k (-1: off)")
            max_new = gr.Slider(1, cap, min(1024, cap), step=1, label=f"Max new tokens (≤ {cap})")

    def mode_defaults(on: bool):
        chosen = think if on else plain
        return chosen.temperature, chosen.top_p, chosen.top_k

    thinking.change(mode_defaults, thinking, [temperature, top_p, top_k], api_visibility="private")
    gr.ChatInterface(
        make_respond(service),
        chatbot=gr.Chatbot(height=520, label="Qwen3", buttons=["copy"], elem_id="chatbot"),
        textbox=gr.Textbox(
            placeholder="Ask about GPUs, CUDA, anything…",
            elem_id="chat-input",
            submit_btn=True,
            stop_btn=True,
            max_length=MAX_MESSAGE_CHARS,
        ),
        additional_inputs=[system_prompt, thinking, temperature, top_p, top_k, max_new],
        # Shown in the empty chat; a click sends the question with the current settings.
        examples=[[question, None, None, None, None, None, None] for question in EXAMPLES],
        example_labels=EXAMPLES,
        editable=True,
        concurrency_limit=None,
        api_name="chat",
        fill_height=False,
    )
