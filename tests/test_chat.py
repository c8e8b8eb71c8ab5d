"""engine.chat and the offline Qwen3 files: prompt format, thinking split, exact vocabulary."""

import pytest

from engine.chat import answer_text, build_messages, render_prompt, split_thinking


def test_prompt_is_qwen3_chatml(tokenizer):
    messages = build_messages([], "hi", "S")
    assert render_prompt(tokenizer, messages) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_prompt(tokenizer, messages, thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_course_prompts_have_the_documented_token_count(tokenizer, question_file):
    from eval_data import load_course_file

    pairs = load_course_file(question_file)
    prompts = [render_prompt(tokenizer, build_messages([], p.question)) for p in pairs]
    assert sum(len(tokenizer.encode(p, add_special_tokens=False)) for p in prompts) == 14_193
    replay = sum(
        min(256, len(tokenizer.encode(p.reference, add_special_tokens=False))) for p in pairs
    )
    assert replay == 40_118


def test_vocabulary_matches_tiktoken_on_the_question_set(tokenizer, question_file):
    import importlib.resources

    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from engine.qwen3_files import QWEN_PATTERN

    ranks = load_tiktoken_bpe(
        str(importlib.resources.files("dashscope") / "resources" / "qwen.tiktoken")
    )
    reference = tiktoken.Encoding(
        "qwen", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens={}
    )
    lines = [line for line in question_file.read_text(encoding="utf-8-sig").split("\n") if line]
    assert len(lines) > 1000
    assert [tokenizer.encode(x, add_special_tokens=False) for x in lines] == [
        reference.encode(x) for x in lines
    ]
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>", "</think>"]) == [
        151643,
        151645,
        151668,
    ]


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


def test_history_loses_reasoning():
    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>x</think>\n\na1"},
    ]
    messages = build_messages(history, "q2", None)
    assert messages == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert answer_text("<think>x</think>a") == "a"
