"""Chat prompts for Qwen3: messages in, prompt text out; reasoning split from the answer.

Qwen3 thinks between `<think>` and `</think>` before answering. With thinking off, the prompt
opens the answer with an empty think block. Earlier replies go back to the model without
their reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class SamplingDefaults:
    """Qwen3's recommended sampling for a mode."""

    temperature: float
    top_p: float
    top_k: int


THINKING_DEFAULTS = SamplingDefaults(temperature=0.6, top_p=0.95, top_k=20)
NON_THINKING_DEFAULTS = SamplingDefaults(temperature=0.7, top_p=0.8, top_k=20)


def sampling_defaults(thinking: bool) -> SamplingDefaults:
    """Recommended sampling settings for thinking or non-thinking mode."""
    return THINKING_DEFAULTS if thinking else NON_THINKING_DEFAULTS


def split_thinking(text: str) -> tuple[str, str, bool]:
    """Split model output into (reasoning, answer, reasoning_finished).

    Text before a `</think>` is reasoning; an opened but unclosed block is all reasoning.
    """
    if THINK_CLOSE in text:
        reasoning, answer = text.split(THINK_CLOSE, 1)
        return reasoning.replace(THINK_OPEN, "", 1).strip(), answer.strip(), True
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN) :].strip(), "", False
    return "", text.strip(), True


def answer_text(text: str) -> str:
    """The answer part of a reply: reasoning removed, stripped ('' if it never finished)."""
    return split_thinking(text)[1]


def build_messages(
    history: list[dict], user_message: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> list[dict]:
    """The message list for the next turn; earlier replies lose their reasoning."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for turn in history:
        content = turn["content"]
        if turn["role"] == "assistant":
            content = split_thinking(content)[1]
        messages.append({"role": turn["role"], "content": content})
    messages.append({"role": "user", "content": user_message})
    return messages


def render_prompt(tokenizer, messages: list[dict], thinking: bool = True) -> str:
    """Apply the model's chat template, generation prompt open."""
    kwargs = {} if thinking else {"enable_thinking": False}
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **kwargs
    )
