"""engine.qwen3.prompt against Qwen3's own tokenizer and chat template (the built-in models' files).

Thinking on/off prompts, `</think>` split from text streamed token by token the way vLLM's
detokenizer streams it, history without reasoning, the course prompts' token counts, and the
prompt each model gets by default.
"""

import hashlib

import pytest

from engine.models.qwen3_files import THINK_IDS, TOKENIZER_FILES
from engine.qwen3.prompt import (
    build_messages,
    chat_prompt_ids,
    default_thinking,
    render_prompt,
    resolve_thinking,
    token_ids,
)
from engine.qwen3.reasoning import answer_text, split_thinking

COURSE_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
)  # the course system's ChatML, character for character


def test_built_in_models_carry_qwen3s_own_tokenizer_files(tiny_model_dir, tokenizer):
    for name, digest in TOKENIZER_FILES.items():
        assert hashlib.sha256((tiny_model_dir / name).read_bytes()).hexdigest() == digest
    assert len(tokenizer.chat_template) == 4116
    assert tokenizer.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_end|>", "<think>", "</think>"]
    ) == [
        151643,
        151645,
        *THINK_IDS,
    ]
    # <think> and </think> are ordinary tokens: decoding keeps them, as vLLM's does
    assert not set(THINK_IDS) & set(tokenizer.all_special_ids)
    ids = tokenizer.encode("<think>\nplan\n</think>\n\nanswer<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>\nplan\n</think>\n\nanswer"


def test_thinking_on_is_the_course_prompt_and_off_adds_an_empty_think_block(tokenizer):
    messages = build_messages([], "什么是warp?")
    assert render_prompt(tokenizer, messages, thinking=True) == COURSE_PROMPT.format(
        q="什么是warp?"
    )
    assert render_prompt(tokenizer, messages, thinking=False) == (
        COURSE_PROMPT.format(q="什么是warp?") + "<think>\n\n</think>\n\n"
    )
    assert render_prompt(tokenizer, build_messages([], "hi", None)) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def course_token_counts(tokenizer, path) -> tuple[int, int, int, int]:
    """(questions, prompt tokens thinking on, prompt tokens thinking off, replay tokens)."""
    from eval_data import load_course_file

    pairs = load_course_file(path)

    def prompt_tokens(thinking: bool) -> int:
        return sum(len(chat_prompt_ids(tokenizer, p.question, thinking=thinking)) for p in pairs)

    replay = sum(min(256, len(token_ids(tokenizer, p.reference))) for p in pairs)
    return len(pairs), prompt_tokens(True), prompt_tokens(False), replay


def test_thinking_off_adds_the_empty_think_block_to_every_prompt(tokenizer, question_file):
    n, on, off, replay = course_token_counts(tokenizer, question_file)
    assert off == on + 4 * n  # <think> \n\n </think> \n\n per prompt
    assert replay > n  # every reference answer is longer than one token


def test_course_prompts_have_the_documented_token_counts(tokenizer, official_file):
    n, on, off, replay = course_token_counts(tokenizer, official_file)
    assert (n, on, replay) == (358, 14_193, 40_118)  # BENCHMARK.md
    assert off == 14_193 + 4 * 358


def streamed_pieces(tokenizer, text: str) -> list[str]:
    """`text` as the deltas vLLM's incremental detokenizer yields, one token at a time."""
    from tokenizers.decoders import DecodeStream

    stream = DecodeStream(skip_special_tokens=True)
    pieces = []
    for token in tokenizer.encode(text, add_special_tokens=False):
        piece = stream.step(tokenizer.backend_tokenizer, token)
        if piece:
            pieces.append(piece)
    return pieces


def test_reasoning_splits_at_think_close_while_streaming(tokenizer):
    reply = "<think>\n用户问warp，先回忆SIMT模型。\n</think>\n\nwarp由32个线程组成。"
    pieces = streamed_pieces(tokenizer, reply)
    assert "".join(pieces) == reply and len(pieces) > 10
    text, closed_at = "", None
    for i, piece in enumerate(pieces):
        text += piece
        reasoning, answer, finished = split_thinking(text)
        if "</think>" not in text:
            assert (answer, finished) == ("", False), text  # nothing leaks into the answer
            assert "用户问warp".startswith(reasoning[:6]) or not reasoning
        elif closed_at is None:
            closed_at = i
    assert pieces[closed_at].strip() == "</think>"  # one token, one delta
    assert split_thinking(text) == ("用户问warp，先回忆SIMT模型。", "warp由32个线程组成。", True)


def test_history_goes_back_without_reasoning(tokenizer):
    """The server drops an earlier reply's reasoning when it makes the prompt (the one place
    reasoning is split; the UI sends the turns as they are)."""
    from engine.qwen3.prompt import fit_to_context

    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>\nsecret plan\n</think>\n\na1"},
    ]
    messages = build_messages(history, "q2", None)
    assert messages == [*history, {"role": "user", "content": "q2"}]  # as the UI sends it
    fitted = fit_to_context(tokenizer, messages, True, max_model_len=512, reply_tokens=64)
    prompt = tokenizer.decode(fitted.ids)
    assert prompt == (
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n"
    )
    assert answer_text("<think>x</think>a") == "a"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>\nplan\n</think>\n\nanswer", ("plan", "answer", True)),
        ("plain answer", ("", "plain answer", True)),
        ("<think>still thinking", ("still thinking", "", False)),
    ],
)
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


@pytest.mark.parametrize(
    "model, random_weights, expected",
    [
        ("SLDRMK/Qwen3-0.6B", False, True),  # fine-tuned on the course prompt
        ("models/sldrmk", False, True),
        ("Qwen/Qwen3-0.6B", False, False),  # would think through its 256 tokens
        ("/data/my-qwen", False, False),
        ("tiny-random", True, True),  # workloads are defined on the course prompt
        ("/tmp/site/q06r", True, True),
    ],
)
def test_course_prompt_thinking_by_model(model, random_weights, expected):
    assert resolve_thinking(None, model, random_weights) is expected
    assert resolve_thinking(not expected, model, random_weights) is (not expected)
    if not random_weights:
        assert default_thinking(model) is expected


def _conversation(turns: int, words: int) -> list[dict]:
    """A system prompt, then `turns` user/assistant pairs of `words` words each, then a question."""
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"question {t}: " + "warp " * words})
        messages.append({"role": "assistant", "content": f"answer {t}: " + "block " * words})
    messages.append({"role": "user", "content": "And shared memory?"})
    return messages


def test_a_conversation_longer_than_the_context_drops_its_oldest_turns(tokenizer):
    from engine.qwen3.prompt import fit_to_context, prompt_ids

    messages = _conversation(turns=6, words=60)
    whole = prompt_ids(tokenizer, messages, True)
    fits = fit_to_context(tokenizer, messages, True, max_model_len=len(whole) + 64, reply_tokens=64)
    assert fits.dropped_turns == 0 and fits.ids == whole  # it fits: nothing is lost

    short = fit_to_context(tokenizer, messages, True, max_model_len=512, reply_tokens=64)
    assert short.dropped_turns > 0 and short.dropped_turns % 2 == 0  # whole user/assistant pairs
    assert len(short.ids) + 64 <= 512
    kept = [messages[0], *messages[1 + short.dropped_turns :]]
    assert short.ids == prompt_ids(tokenizer, kept, True)  # the newest turns, in order
    text = tokenizer.decode(short.ids)
    assert "You are a helpful assistant." in text and "And shared memory?" in text
    assert "question 0:" not in text and f"answer {5}:" in text
    # The fewest turns go: one more pair would still have fitted only without them.
    one_less = [messages[0], *messages[1 + short.dropped_turns - 2 :]]
    assert len(prompt_ids(tokenizer, one_less, True)) + 64 > 512


def test_a_message_that_does_not_fit_alone_is_refused_with_its_size(tokenizer):
    from engine.qwen3.prompt import fit_to_context
    from engine.types import RequestError

    messages = [{"role": "user", "content": "warp " * 2000}]
    with pytest.raises(RequestError, match=r"prompt of \d+ tokens; this engine takes at most 448 "):
        fit_to_context(tokenizer, messages, True, max_model_len=512, reply_tokens=64)


def test_a_long_history_is_fitted_with_two_renders_not_one_per_turn_dropped(tokenizer):
    """Each earlier turn is counted once: a 40-turn history cut to a small context renders the
    whole conversation once and the kept one once (before, once per turn dropped)."""
    from engine.qwen3.prompt import fit_to_context, prompt_ids

    class Counting:
        def __init__(self, inner):
            self.inner, self.renders = inner, 0

        def apply_chat_template(self, *args, **kwargs):
            self.renders += 1
            return self.inner.apply_chat_template(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    counting = Counting(tokenizer)
    messages = _conversation(turns=20, words=30)
    fitted = fit_to_context(counting, messages, True, max_model_len=512, reply_tokens=64)
    assert fitted.dropped_turns > 20
    assert counting.renders == 2
    kept = [messages[0], *messages[1 + fitted.dropped_turns :]]
    assert fitted.ids == prompt_ids(tokenizer, kept, True)
    one_less = [messages[0], *messages[1 + fitted.dropped_turns - 2 :]]
    assert len(prompt_ids(tokenizer, one_less, True)) + 64 > 512  # the fewest turns went
