"""Qwen3's reasoning, split from its answer: in a whole reply, and as a reply streams.

Qwen3 thinks between `<think>` and `</think>` before answering; both are ordinary tokens of its
vocabulary, so they stay in the decoded text. The one place that splits them, for the chat's
stream, the benchmark's answers and earlier turns sent back to the model.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_thinking(text: str) -> tuple[str, str, bool]:
    """Split model output into (reasoning, answer, reasoning_finished).

    Text before a `</think>` is reasoning; an opened but unclosed block is all reasoning.
    """
    if THINK_CLOSE in text:
        reasoning, answer = text.split(THINK_CLOSE, 1)
        return reasoning.replace(THINK_OPEN, "", 1).strip(), answer.strip(), True
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN) :].strip(), "", False
    return "", text.strip(), True


def has_think_block(text: str) -> bool:
    """Whether a reply holds reasoning: a `</think>`, or a `<think>` it opens with."""
    return THINK_CLOSE in text or text.lstrip().startswith(THINK_OPEN)


def answer_text(text: str) -> str:
    """The answer part of a reply: reasoning removed, stripped ('' if it never finished)."""
    return split_thinking(text)[1]


class ThinkSplitter:
    """Splits a streamed reply into reasoning and answer deltas as its text arrives.

    Text inside a leading `<think>...</think>` is reasoning, the rest the answer; a tag cut
    across two deltas is held back until it is whole. Each part starts at its first
    non-blank character.
    """

    def __init__(self):
        self.mode = "start"  # start, thinking, answer
        self.held = ""
        self.started = {"reasoning": False, "answer": False}

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, answer) text that this delta adds."""
        self.held += text
        reasoning = answer = ""
        if self.mode == "start":
            stripped = self.held.lstrip()
            if stripped.startswith(THINK_OPEN):
                self.mode, self.held = "thinking", stripped[len(THINK_OPEN) :]
            elif THINK_OPEN.startswith(stripped):
                return "", ""  # perhaps the start of <think>: wait for more
            else:
                self.mode = "answer"
        if self.mode == "thinking":
            if THINK_CLOSE in self.held:
                reasoning, self.held = self.held.split(THINK_CLOSE, 1)
                self.mode = "answer"
            else:
                keep = _partial_suffix(self.held, THINK_CLOSE)
                reasoning, self.held = (
                    self.held[: len(self.held) - keep],
                    self.held[len(self.held) - keep :],
                )
        if self.mode == "answer":
            answer, self.held = self.held, ""
        return self._trim("reasoning", reasoning), self._trim("answer", answer)

    def finish(self) -> tuple[str, str]:
        """What is still held back, once the reply has ended."""
        held, self.held = self.held, ""
        if self.mode == "thinking":
            return self._trim("reasoning", held), ""
        return "", self._trim("answer", held)

    def _trim(self, part: str, text: str) -> str:
        if not self.started[part]:
            text = text.lstrip()
            self.started[part] = bool(text)
        return text


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that begins `tag` (a tag cut off mid-way)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
