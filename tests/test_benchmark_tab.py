"""ui.benchmark without a browser: which question set a run takes and how it is labelled, the
built-in sample standing in (with the reason) where the official set cannot be had, and the
Questions slider's size for each set. Real files and the real loader; no engine is needed."""

from __future__ import annotations

import pytest

from bench.workloads import BenchmarkSpec
from eval_data import QUESTION_SETS, question_count
from eval_data.download import ENV_FILE
from tests.conftest import stand_in_text
from ui.benchmark import OUTPUTS, BenchmarkSession, _submitting, resize_questions

SAMPLE = QUESTION_SETS["sample"]


@pytest.fixture
def session():
    return BenchmarkSession(backend=None, policy=None)


@pytest.fixture
def no_official_file(tmp_path, monkeypatch):
    """QWEN_DEMO_EVAL_FILE names a file that is not there: the official set cannot be had."""
    missing = tmp_path / "gone" / "official_test_358.txt"
    monkeypatch.setenv(ENV_FILE, str(missing))
    return missing


def course_file(tmp_path, count: int):
    path = tmp_path / f"own-{count}.txt"
    path.write_text(stand_in_text(count), encoding="utf-8")
    return path


def shown(outputs: tuple) -> dict:
    return dict(zip(OUTPUTS, outputs, strict=True))


def test_without_the_official_set_the_sample_runs_and_the_reason_is_shown(
    session, no_official_file
):
    pairs, label, fallback = session.load_pairs(None, "official")
    assert (len(pairs), label) == (24, SAMPLE)
    assert f"points at a missing file: {no_official_file}" in fallback

    spec = BenchmarkSpec("answer", len(pairs), 16, question_set=label)
    first = shown(_submitting(spec, fallback))
    assert first["question_set"] == "sample", "the tab should now show the set that runs"
    for text in (first["progress"], first["summary"]):
        assert "could not be had, so the built-in sample ran instead" in text, text
        assert str(no_official_file) in text and "QWEN_DEMO_EVAL_FILE" in text, text
    assert first["progress"].startswith(f"Submitting 24 questions from {SAMPLE}")


def test_the_official_set_runs_when_it_can_be_had(session, questions):
    pairs, label, fallback = session.load_pairs(None, "official")
    assert len(pairs) == 358 and fallback == ""
    if questions.official:
        assert label == "the official course set (358 questions)", label
    else:
        assert label.startswith("a custom question set") and "not the official" in label, label
    first = shown(_submitting(BenchmarkSpec("answer", 8, 16, question_set=label), fallback))
    assert first["question_set"] == {"__type__": "update"} and first["summary"] == ""


def test_an_upload_goes_before_the_named_set(session, tmp_path, no_official_file):
    pairs, label, fallback = session.load_pairs(str(course_file(tmp_path, 5)), "official")
    assert (len(pairs), label, fallback) == (5, "uploaded file own-5.txt", "")


def test_question_count_of_each_set_needs_no_download(tmp_path, monkeypatch, no_official_file):
    assert question_count("sample") == 24
    assert question_count("official") == 358  # the missing file: the published count
    monkeypatch.setenv(ENV_FILE, str(course_file(tmp_path, 7)))
    assert question_count("official") == 7
    monkeypatch.delenv(ENV_FILE)
    monkeypatch.setenv("QWEN_DEMO_CACHE", str(tmp_path / "empty-cache"))
    assert question_count("official") == 358
    assert not (tmp_path / "empty-cache").exists(), "counting must not download"
    with pytest.raises(ValueError, match="unknown question set"):
        question_count("other")


def test_the_slider_follows_the_set_unless_narrowed(tmp_path, no_official_file):
    slider, size = resize_questions("sample", None, 358, 358)
    assert (slider["maximum"], slider["value"], size) == (24, 24, 24)
    slider, size = resize_questions("official", None, 24, 24)
    assert (slider["maximum"], slider["value"], size) == (358, 358, 358)
    slider, size = resize_questions("sample", None, 8, 358)  # a run of 8 that fell back
    assert (slider["maximum"], slider["value"]) == (24, 8)
    slider, size = resize_questions("sample", str(course_file(tmp_path, 5)), 24, 24)
    assert (slider["maximum"], slider["value"], size) == (5, 5, 5)
    bad = tmp_path / "notes.txt"
    bad.write_text("no questions here", encoding="utf-8")
    assert resize_questions("sample", str(bad), 24, 24) == ({"__type__": "update"},) * 2
