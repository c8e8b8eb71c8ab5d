"""Evaluation data: the course's question set, its loader and its verified download.

from eval_data import load_course_file, official_question_set
pairs = load_course_file(official_question_set())  # 358 QAPair
pairs = load_course_file(question_set_path("sample"))  # 24 QAPair, built in
question_count("official")  # 358, or the local file's count; never downloads
"""

from eval_data.download import (
    OFFICIAL_SHA256,
    OFFICIAL_URL,
    DataError,
    is_official,
    local_question_set,
    official_question_set,
)
from eval_data.loader import FormatError, QAPair, load_course_file, parse_course_text
from eval_data.sets import (
    QUESTION_SETS,
    SAMPLE_FILE,
    add_question_arguments,
    question_count,
    question_set_label,
    question_set_path,
    questions_from_args,
)

__all__ = [
    "DataError",
    "FormatError",
    "OFFICIAL_SHA256",
    "OFFICIAL_URL",
    "QAPair",
    "QUESTION_SETS",
    "SAMPLE_FILE",
    "add_question_arguments",
    "is_official",
    "load_course_file",
    "local_question_set",
    "official_question_set",
    "parse_course_text",
    "question_count",
    "question_set_label",
    "question_set_path",
    "questions_from_args",
]
