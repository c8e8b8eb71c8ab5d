"""engine.qwen3.reasoning.ThinkSplitter: a streamed reply split into reasoning and answer deltas,
with the `<think>` and `</think>` tags cut across two and three deltas anywhere.

Pure: no tokenizer, no engine. Every way of cutting the reply must give the same reasoning and
answer as the reply sent whole, and no tag text may leak into either part.
"""

from itertools import combinations

import pytest

from engine.qwen3.reasoning import ThinkSplitter

REPLY = "<think>\nwarps run 32 threads.\n</think>\n\nA warp is 32 threads."
REASONING = "warps run 32 threads.\n"
ANSWER = "A warp is 32 threads."


def run(pieces: list[str]) -> tuple[str, str]:
    """(reasoning, answer) that a splitter gives for these deltas, its final flush included."""
    splitter, reasoning, answer = ThinkSplitter(), "", ""
    for piece in pieces:
        more_reasoning, more_answer = splitter.feed(piece)
        reasoning, answer = reasoning + more_reasoning, answer + more_answer
    more_reasoning, more_answer = splitter.finish()
    return reasoning + more_reasoning, answer + more_answer


def cuts(text: str, count: int) -> list[list[str]]:
    """Every way of cutting `text` into `count` non-empty pieces."""
    return [
        [text[a:b] for a, b in zip((0, *points), (*points, len(text)), strict=True)]
        for points in combinations(range(1, len(text)), count - 1)
    ]


@pytest.mark.parametrize(
    "pieces",
    [
        ["<thi", "nk>\nwarps run 32 threads.\n</think>\n\nA warp is 32 threads."],
        ["<think>\nwarps run 32 threads.\n</th", "ink>\n\nA warp is 32 threads."],
        ["<", "think>\nwarps run 32 threads.\n<", "/think>\n\nA warp is 32 threads."],
        ["<thi", "nk>\nwarps run 32 threads.\n</th", "ink>\n\nA warp is 32 threads."],
        ["<t", "hin", "k>\nwarps run 32 threads.\n</think>\n\nA warp is 32 threads."],
        ["<think>\nwarps run 32 threads.\n</", "thi", "nk>\n\nA warp is 32 threads."],
    ],
)
def test_a_tag_cut_across_deltas_is_held_back_until_whole(pieces):
    assert "".join(pieces) == REPLY
    assert run(pieces) == (REASONING, ANSWER)


def test_a_tag_cut_part_way_gives_no_tag_text_while_it_waits():
    splitter = ThinkSplitter()
    assert splitter.feed("<thi") == ("", "")
    assert splitter.feed("nk>\nwarps") == ("warps", "")
    assert splitter.feed(" run</th") == (" run", "")  # "</th" held back, not shown
    assert splitter.feed("ink>\n\nA warp") == ("", "A warp")
    assert splitter.finish() == ("", "")


def test_every_cut_into_two_pieces_splits_as_the_whole_reply_does():
    assert run([REPLY]) == (REASONING, ANSWER)
    for pieces in cuts(REPLY, 2):
        assert run(pieces) == (REASONING, ANSWER), pieces


def test_every_cut_into_three_pieces_around_the_tags_splits_as_the_whole_reply_does():
    """Both cuts inside or next to a tag: every place in `<think>` and `</think>`."""
    close = REPLY.index("</think>")
    near_tags = set(range(1, 9)) | set(range(close - 1, close + 10))
    for pieces in cuts(REPLY, 3):
        first, second = len(pieces[0]), len(pieces[0]) + len(pieces[1])
        if first in near_tags and second in near_tags:
            assert run(pieces) == (REASONING, ANSWER), pieces


@pytest.mark.parametrize(
    "pieces, expected",
    [
        (["A warp ", "is 32 threads."], ("", "A warp is 32 threads.")),  # no thinking at all
        (["<", "b>bold</b>"], ("", "<b>bold</b>")),  # looked like <think>, was not
        (["<think>\nstill ", "thinking </thi"], ("still thinking </thi", "")),  # cut off
        (["  <thi", "nk></think>", "\n\nA warp."], ("", "A warp.")),  # empty think block
    ],
)
def test_replies_without_a_whole_think_block(pieces, expected):
    assert run(pieces) == expected
