"""Chat prompts for Qwen3: messages in, prompt text out; reasoning split from the answer.

Qwen3 thinks between `<think>` and `</think>` before answering. With thinking off, the prompt
opens the answer with an empty think block. Earlier replies go back to the model without
their reasoning. `<think>` and `</think>` are ordinary tokens in Qwen3's vocabulary, so they
stay in the decoded text and are split off here.

Thinking on renders exactly the course system's prompt (ChatML: system, user, then
`<|im_start|>assistant\n`), which its fine-tuned model answers directly; the stock Qwen3-0.6B
would spend its 256 tokens thinking, so for it the benchmark and `/predict` turn thinking off.
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


# Models that answer the course prompt directly (no thinking block): the course's fine-tuned
# model, and the built-in random-weight models, whose workloads are defined on that prompt.
COURSE_PROMPT_MODELS = ("sldrmk", "tiny-random", "qwen3-0.6b-random")


def default_thinking(model: str) -> bool:
    """Whether the benchmark and `/predict` prompt `model` with thinking on (the course's exact
    ChatML) rather than off (Qwen3's empty think block)."""
    name = model.lower()
    return any(key in name for key in COURSE_PROMPT_MODELS)


def resolve_thinking(setting: bool | None, model: str, random_weights: bool) -> bool:
    """The course prompt's thinking setting: as set, else by model (random weights: on)."""
    if setting is not None:
        return setting
    return random_weights or default_thinking(model)


def prompt_description(thinking: bool) -> str:
    """A short human description of the prompt a thinking setting produces."""
    if thinking:
        return "thinking on: the course's ChatML prompt (system, question, assistant turn open)"
    return "thinking off: ChatML with Qwen3's empty think block (the model answers directly)"


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


def token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of text as the engine sends it (no special tokens added: the chat template
    has its own)."""
    return tokenizer.encode(text, add_special_tokens=False)


def chat_prompt_ids(
    tokenizer,
    question: str,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    thinking: bool = True,
) -> list[int]:
    """Token ids of one question as a chat prompt, generation prompt open: with thinking on,
    the course's exact prompt (the benchmark, `/predict`, and the measuring tools use this)."""
    messages = build_messages([], question, system_prompt)
    return token_ids(tokenizer, render_prompt(tokenizer, messages, thinking))
