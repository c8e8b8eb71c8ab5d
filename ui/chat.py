"""The Chat tab: replies streamed from the shared engine, thinking shown as a foldable block.

Every user's message goes through Gradio's queue (no concurrency limit: nobody waits for
another user's reply) to the server, where it joins the engine's batch; Stop cancels the
handler, which closes the stream, and the server aborts the request inside vLLM. Redraws are
paced by load (`UpdatePacer`): a reply's text arrives as fast as the engine makes it, but the
page of each user is redrawn at most every 50 ms alone and less often when many stream at
once, so that the UI keeps up with the engine. A conversation longer than the context loses
its oldest turns (the reply says so).
"""

from __future__ import annotations

import time
from contextlib import aclosing

import gradio as gr

from engine.qwen3.prompt import DEFAULT_SYSTEM_PROMPT, build_messages, sampling_defaults
from engine.types import GenerationParams
from protocol import ChatDone, ChatRequest
from ui.backend import Backend, BackendError
from ui.errors import visitor_error

THINKING_TITLE = "Thinking"
MAX_MESSAGE_CHARS = 100_000
EXAMPLES = [
    "什么是 CUDA 中的 warp？warp divergence 为什么会降低性能？",
    "共享内存的 bank conflict 是怎么产生的？如何避免？",
    "Explain in three sentences how a KV cache speeds up LLM decoding.",
]
STOPPING = "The server is shutting down; try again once it is back."


class UpdatePacer:
    """How often one chat may redraw: `min_s` alone, and slower as more chats stream at once,
    so that all of them together stay within `per_second` redraws."""

    def __init__(self, per_second: float = 300.0, min_s: float = 0.05):
        self.per_second, self.min_s = per_second, min_s
        self.active = 0

    def interval(self) -> float:
        return max(self.min_s, self.active / self.per_second)


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


def reply_messages(
    reasoning: str, answer: str, finished: bool, stats: str | None = None
) -> list[dict]:
    """Chatbot messages for a reply so far: thinking (foldable), answer, then figures."""
    messages = []
    thinking = bool(reasoning) and not answer and not finished
    if reasoning:
        messages.append(
            {
                "role": "assistant",
                "content": reasoning.rstrip(),
                "metadata": {"title": THINKING_TITLE, "status": "pending" if thinking else "done"},
            }
        )
    if answer or finished:
        messages.append({"role": "assistant", "content": answer.rstrip()})
    if stats:
        messages.append({"role": "assistant", "content": "", "metadata": {"title": stats}})
    return messages


def reply_stats(done: ChatDone) -> str:
    """'N tokens · TTFT x s · y tok/s' for under a reply (decode rate after the first token)."""
    tokens, ttft, elapsed = done.tokens, done.ttft_s, done.elapsed_s
    rate = (
        (tokens - 1) / (elapsed - ttft)
        if ttft is not None and tokens > 1 and elapsed > ttft
        else 0.0
    )
    line = f"{tokens} tokens · TTFT {'n/a' if ttft is None else f'{ttft:.2f} s'} · {rate:.1f} tok/s"
    dropped = done.dropped_turns
    if dropped:
        line += f" · {dropped} earlier message{'s' * (dropped > 1)} left out to fit the context"
    return line


def chat_params(temperature, top_p, top_k, max_new_tokens) -> GenerationParams:
    """The sliders' sampling settings (the server validates them); gr.Error for values that
    are not numbers."""
    try:
        return GenerationParams(
            max_new_tokens=int(max_new_tokens),
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
        )
    except (TypeError, ValueError) as err:
        raise visitor_error(f"Bad sampling settings: {err}") from None


def error_text(err: BackendError) -> str:
    """A refusal in words a chat user can act on."""
    if err.busy:
        return f"The server is busy right now; try again shortly. ({err})"
    if err.shutting_down:
        return STOPPING
    return str(err)


def make_respond(backend: Backend, pacer: UpdatePacer):
    """The chat handler over the server's chat stream."""

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
            raise visitor_error("Type a message first.")
        if len(message) > MAX_MESSAGE_CHARS:
            raise visitor_error(
                f"The message has {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}."
            )
        if backend.closing:
            raise visitor_error(STOPPING)
        params = chat_params(temperature, top_p, top_k, max_new_tokens)
        messages = build_messages(model_history(history), message, system_prompt or None)
        request = ChatRequest(messages, bool(thinking), params)
        reasoning = answer = ""
        shown, done = 0.0, None
        pacer.active += 1
        try:
            async with aclosing(backend.chat(request)) as events:
                async for event in events:  # leaving early closes the stream: vLLM aborts
                    if backend.stopping.is_set():
                        raise visitor_error(STOPPING)
                    if isinstance(event, ChatDone):
                        done = event
                        break
                    reasoning += event.reasoning
                    answer += event.answer
                    now = time.monotonic()
                    if (reasoning or answer) and now - shown >= pacer.interval():
                        shown = now
                        yield reply_messages(reasoning, answer, False)
        except BackendError as err:
            raise visitor_error(error_text(err)) from None
        finally:
            pacer.active -= 1
        if done is None:
            raise visitor_error("The reply ended early; try again.")
        yield reply_messages(reasoning, answer, True, reply_stats(done))

    return respond


def build_chat_tab(backend: Backend, max_new_tokens_cap: int, pacer: UpdatePacer) -> None:
    """Lay out the Chat tab inside the current Blocks context."""
    think, plain = sampling_defaults(True), sampling_defaults(False)
    cap = max_new_tokens_cap
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
        make_respond(backend, pacer),
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
