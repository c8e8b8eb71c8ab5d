"""Parse the course's question files: blocks of the form `（N. 问题：… 答案：…`.

Both published variants (blocks separated by blank lines, or not) parse to the same pairs.
An answer runs to the next block and keeps its inner line breaks, exactly as the official
harness reads it (so a section heading that follows an answer stays part of that answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BLOCK_START = re.compile(r"^（\s*(\d+)\s*[.．、]\s*问题[：:]", re.MULTILINE)
ANSWER_MARK = re.compile(r"^\s*答案[：:]", re.MULTILINE)
MAX_FILE_BYTES = 16 * 2**20


class FormatError(ValueError):
    """A question file that is not in the course format; the message says where and why."""


@dataclass(frozen=True)
class QAPair:
    """One numbered question of the set and its reference answer."""

    number: int
    question: str
    reference: str


def parse_course_text(text: str) -> list[QAPair]:
    """Split course-format text into question/answer pairs, in file order."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    starts = list(BLOCK_START.finditer(text))
    if not starts:
        raise FormatError("no question found: expected blocks like '（1. 问题：… 答案：…'")
    if text[: starts[0].start()].strip():
        raise FormatError(f"unexpected text before question {starts[0].group(1)}")
    pairs = []
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        pairs.append(_parse_block(int(start.group(1)), text[start.end() : end]))
    return pairs


def _parse_block(number: int, body: str) -> QAPair:
    mark = ANSWER_MARK.search(body)
    if mark is None:
        raise FormatError(f"question {number} has no '答案：' line")
    question, reference = body[: mark.start()].strip(), body[mark.end() :].strip()
    if not question:
        raise FormatError(f"question {number} is empty")
    if not reference:
        raise FormatError(f"question {number} has an empty answer")
    return QAPair(number, question, reference)


def load_course_file(path: str | Path) -> list[QAPair]:
    """Read and parse a course-format file (UTF-8, with or without BOM)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"question file not found: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise FormatError(f"question file is larger than {MAX_FILE_BYTES // 2**20} MiB: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise FormatError(f"question file is not UTF-8 text: {path} ({err.reason})") from None
    return parse_course_text(text)
