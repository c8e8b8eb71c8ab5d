"""The question sets the benchmark offers by name, and how a command line picks one.

- `official`: the course's 358 questions, downloaded once and checked (`eval_data.download`);
  a file given by `QWEN_DEMO_EVAL_FILE` is labelled official only if its SHA-256 is the
  official one (`question_set_label`), else a custom set;
- `sample`: 24 questions with reference answers written for this project, shipped in the
  package (`sample_gpu_qa.txt`), so a benchmark runs on a machine that cannot download.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval_data.download import DataError, is_official, local_question_set, official_question_set
from eval_data.loader import FormatError, QAPair, load_course_file

SAMPLE_FILE = Path(__file__).with_name("sample_gpu_qa.txt")
OFFICIAL_COUNT = 358
QUESTION_SETS = {
    "official": "the official course set (358 questions)",
    "sample": "the built-in sample (24 questions, works offline)",
}


def question_set_path(name: str) -> Path:
    """The file of a named set (may download the official one; raises DataError offline)."""
    if name == "sample":
        return SAMPLE_FILE
    if name == "official":
        return official_question_set()
    raise ValueError(f"unknown question set {name!r}; choose from {', '.join(QUESTION_SETS)}")


def question_set_label(name: str, path: Path) -> str:
    """A named set's label for reports: `official` only for the file with the official SHA-256."""
    if name == "official" and not is_official(path):
        return f"a custom question set ({path.name}: not the official file, its SHA-256 differs)"
    return QUESTION_SETS[name]


def question_count(name: str) -> int:
    """How many questions a named set holds, found without a download: the official set's
    published count where this machine has no usable file for it yet."""
    if name != "official":
        return len(load_course_file(question_set_path(name)))
    try:
        path = local_question_set()
        return OFFICIAL_COUNT if path is None else len(load_course_file(path))
    except (DataError, FormatError):
        return OFFICIAL_COUNT


def add_question_arguments(parser: argparse.ArgumentParser) -> None:
    """`--question-set` and `--data`, as every benchmark command line takes them."""
    parser.add_argument(
        "--question-set",
        choices=sorted(QUESTION_SETS),
        default="official",
        help="official (358, downloaded once) or sample (24, built in, works offline)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="question file in the course format (instead of --question-set)",
    )


def questions_from_args(args: argparse.Namespace) -> tuple[list[QAPair], str]:
    """(questions, a label for reports) as `add_question_arguments` chose them.

    Raises DataError when the official set cannot be had (its message names the built-in
    sample too) and FormatError for a file not in the course format."""
    if args.data:
        return load_course_file(args.data), str(args.data)
    try:
        path = question_set_path(args.question_set)
    except DataError as err:
        raise DataError(
            f"{str(err).rstrip('.')}. Or run the built-in sample, which needs no download: "
            "--question-set sample."
        ) from None
    return load_course_file(path), question_set_label(args.question_set, path)
