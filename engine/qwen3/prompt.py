"""Chat prompts for Qwen3: messages in, token ids out (the one place that does it, for the chat,
the benchmark and `/predict`); thinking on or off and its sampling; the context's limit.

Qwen3 thinks between `<think>` and `</think>` before answering. With thinking off, the prompt
opens the answer with an empty think block. Earlier replies go back to the model without
their reasoning. `<think>` and `</think>` are ordinary tokens in Qwen3's vocabulary, so they
stay in the decoded text and are split off by `engine.qwen3.reasoning`.

Thinking on renders exactly the course system's prompt (ChatML: system, user, then
`<|im_start|>assistant\n`), which its fine-tuned model answers directly; the stock Qwen3-0.6B
would spend its 256 tokens thinking, so for it the benchmark and `/predict` turn thinking off.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.qwen3.reasoning import has_think_block, split_thinking
from engine.types import GenerationParams, RequestError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class SamplingDefaults:
    """Qwen3's recommended sampling for a mode."""

    temperature: float
    top_p: float
    top_k: int


THINKING_DEFAULTS = SamplingDefaults(temperature=0.6, top_p=0.95, top_k=20)
# The engine's own defaults (`GenerationParams`) are Qwen3's non-thinking recommendation.
NON_THINKING_DEFAULTS = SamplingDefaults(
    GenerationParams.temperature, GenerationParams.top_p, GenerationParams.top_k
)


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


def build_messages(
    history: list[dict], user_message: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> list[dict]:
    """The message list for the next turn: the system prompt, the history, the new message
    (earlier replies lose their reasoning when the prompt is made: `fit_to_context`)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": turn["role"], "content": turn["content"]} for turn in history]
    messages.append({"role": "user", "content": user_message})
    return messages


def without_reasoning(messages: list[dict]) -> list[dict]:
    """The messages as the model sees them again: an earlier reply with a think block keeps
    only its answer (others are left as they are)."""
    return [
        {**m, "content": split_thinking(m["content"])[1]}
        if m["role"] == "assistant" and has_think_block(m["content"])
        else m
        for m in messages
    ]


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


def prompt_ids(tokenizer, messages: list[dict], thinking: bool = True) -> list[int]:
    """Token ids of a conversation's prompt, generation prompt open."""
    return token_ids(tokenizer, render_prompt(tokenizer, messages, thinking))


def chat_prompt_ids(
    tokenizer,
    question: str,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    thinking: bool = True,
) -> list[int]:
    """Token ids of one question as a chat prompt, generation prompt open: with thinking on,
    the course's exact prompt (the benchmark, `/predict`, and the measuring tools use this)."""
    return prompt_ids(tokenizer, build_messages([], question, system_prompt), thinking)


@dataclass(frozen=True)
class FittedPrompt:
    """A conversation's prompt cut to the context: its ids and how many earlier turns it lost."""

    ids: list[int]
    dropped_turns: int  # earlier messages left out (user and assistant, oldest first)


def fit_to_context(
    tokenizer, messages: list[dict], thinking: bool, max_model_len: int, reply_tokens: int
) -> FittedPrompt:
    """The prompt of `messages`, its oldest turns dropped until the reply has room.

    Earlier replies go back without their reasoning. The system prompt and the newest user
    message always stay; earlier turns go, oldest
    first, until the prompt leaves at least `min(reply_tokens, max_model_len // 4)` tokens for
    the reply; a kept conversation starts at a user turn. Each turn is counted once (its ChatML
    block), so a long history costs one more render, not one per turn dropped. A newest message
    that does not fit even alone is a RequestError saying so.
    """
    room = max(1, min(reply_tokens, max_model_len // 4))
    messages = without_reasoning(messages)
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    ids = prompt_ids(tokenizer, system + turns, thinking)
    if len(ids) + room <= max_model_len:
        return FittedPrompt(ids, 0)
    sizes = [len(token_ids(tokenizer, _chatml_block(turn))) for turn in turns]
    excess, dropped = len(ids) + room - max_model_len, 0
    while dropped < len(turns) - 1:
        excess -= sizes[dropped]
        dropped += 1
        if excess > 0 or turns[dropped]["role"] != "user":
            continue  # still too long, or a conversation would restart at a reply
        ids = prompt_ids(tokenizer, system + turns[dropped:], thinking)
        if len(ids) + room <= max_model_len:  # the count by turns is checked by the render
            return FittedPrompt(ids, dropped)
        excess = len(ids) + room - max_model_len
    alone = prompt_ids(tokenizer, system + turns[-1:], thinking)
    raise RequestError(
        f"the message makes a prompt of {len(alone)} tokens; this engine takes at most "
        f"{max_model_len - room} (max_model_len {max_model_len}, leaving {room} for the reply)"
    )


def _chatml_block(turn: dict) -> str:
    """One earlier turn as Qwen3's chat template writes it (ChatML; replies without reasoning)."""
    return f"<|im_start|>{turn['role']}\n{turn['content']}<|im_end|>\n"
