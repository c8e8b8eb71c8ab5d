"""eval_data.loader: both published layouts give the official 358 pairs; bad files fail clearly;
a question file counts as the official set only with the official SHA-256."""

import argparse

import pytest

from eval_data import (
    QUESTION_SETS,
    FormatError,
    is_official,
    load_course_file,
    parse_course_text,
    questions_from_args,
)
from eval_data.download import ENV_FILE


def test_official_file_matches_the_official_pairs(official_file, seed_details):
    pairs = load_course_file(official_file)
    assert len(pairs) == 358
    assert [p.question for p in pairs] == [d["question"] for d in seed_details]
    assert [p.reference for p in pairs] == [d["reference"] for d in seed_details]
    assert [p.number for p in pairs] == list(range(1, 359))


def test_variant_without_blank_lines_parses_the_same(question_file, tmp_path):
    text = question_file.read_text(encoding="utf-8-sig")
    compact = tmp_path / "compact.txt"
    compact.write_text(
        "\n".join(line for line in text.split("\n") if line.strip()), encoding="utf-8"
    )
    assert load_course_file(compact) == load_course_file(question_file)


def test_multiline_answers_keep_their_lines():
    pairs = parse_course_text(
        "（1. 问题：写代码？\n答案：第一行\n第二行\n\n（2. 问题：B？\n答案：b"
    )
    assert pairs[0].reference == "第一行\n第二行"
    assert pairs[1].question == "B？"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no question found"),
        ("just some text", "no question found"),
        ("（1. 问题：没有答案", "no '答案：' line"),
        ("（1. 问题：\n答案：空问题", "question 1 is empty"),
        ("（1. 问题：Q？\n答案：", "empty answer"),
        ("前言\n（1. 问题：Q？\n答案：A", "unexpected text before question 1"),
    ],
)
def test_malformed_text_says_what_is_wrong(text, message):
    with pytest.raises(FormatError, match=message):
        parse_course_text(text)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        load_course_file(tmp_path / "absent.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(FormatError, match="not UTF-8"):
        load_course_file(binary)


def ask_official(monkeypatch, path):
    """`--question-set official` with QWEN_DEMO_EVAL_FILE pointing at `path`."""
    monkeypatch.setenv(ENV_FILE, str(path))
    return questions_from_args(argparse.Namespace(data=None, question_set="official"))


def test_the_official_label_needs_the_official_hash(official_file, tmp_path, monkeypatch):
    pairs, label = ask_official(monkeypatch, official_file)
    assert is_official(official_file) and label == QUESTION_SETS["official"]
    broken = tmp_path / official_file.name  # the same name, one answer's text changed
    text = official_file.read_text(encoding="utf-8-sig")
    broken.write_text(text.replace(pairs[0].reference, pairs[0].reference + "。", 1), "utf-8")
    broken_pairs, label = ask_official(monkeypatch, broken)
    assert not is_official(broken) and len(broken_pairs) == 358  # still usable
    assert label != QUESTION_SETS["official"] and "custom" in label and "SHA-256" in label


def test_a_stand_in_for_the_official_file_is_labelled_custom(tmp_path, monkeypatch):
    stand_in = tmp_path / "official_test_358.txt"
    stand_in.write_text("（1. 问题：什么是 warp？\n答案：32 个线程。\n", encoding="utf-8")
    pairs, label = ask_official(monkeypatch, stand_in)
    assert len(pairs) == 1 and label.startswith("a custom question set (official_test_358.txt")
