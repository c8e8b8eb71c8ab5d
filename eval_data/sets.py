"""The question sets the benchmark offers by name.

- `official`: the course's 358 questions, downloaded once and checked (`eval_data.download`);
- `sample`: 24 questions with reference answers written for this project, shipped in the
  package (`sample_gpu_qa.txt`), so a benchmark runs on a machine that cannot download.
"""

from __future__ import annotations

from pathlib import Path

from eval_data.download import official_question_set

SAMPLE_FILE = Path(__file__).with_name("sample_gpu_qa.txt")
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
