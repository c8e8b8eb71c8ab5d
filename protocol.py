"""The messages between a UI worker and the server's private API, written down once.

The server (`server.internal`) and the UI's client of it (`ui.backend`) both build and read
these; neither writes a dictionary of its own.

    POST /internal/chat       ChatRequest -> NDJSON: ChatDelta..., then ChatDone
    POST /internal/benchmark  {"pairs", "spec", "owner"} -> NDJSON: BenchmarkProgress...,
                              then BenchmarkDone (or Cancelled)

Any stream may end with a StreamError line instead: the error's message, its machine-readable
code (`engine.types.ErrorCode`) and HTTP status. One JSON object per line; `encode` writes an
event, `decode` reads one back as its type.

A chat request's sampling settings default to Qwen3's recommended ones for its mode (thinking
or not) and are validated here, once, on the server's side of the socket.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from engine.qwen3.prompt import sampling_defaults
from engine.types import GenerationParams

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_NEW_TOKENS = GenerationParams.max_new_tokens


@dataclass(frozen=True)
class ChatRequest:
    """A conversation to answer: its messages (the last one the user's), thinking on or off,
    and the sampling settings."""

    messages: list[dict]
    thinking: bool = True
    params: GenerationParams = field(default_factory=GenerationParams)

    @classmethod
    def parse(cls, data) -> ChatRequest:
        """A request from its JSON; ValueError saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError('"messages" must be a non-empty list')
        for m in messages:
            if (
                not isinstance(m, dict)
                or m.get("role") not in ROLES
                or not isinstance(m.get("content"), str)
            ):
                raise ValueError('each message needs a "role" (system, user, assistant) and text')
        if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
            raise ValueError("the last message must be the user's, and not empty")
        thinking = data.get("thinking", True)
        if not isinstance(thinking, bool):
            raise ValueError('"thinking" must be true or false')
        raw = data.get("params")
        params = sampling({} if raw is None else raw, thinking)
        return cls([dict(m) for m in messages], thinking, params)

    def to_json(self) -> dict:
        params = self.params
        return {
            "messages": self.messages,
            "thinking": self.thinking,
            "params": {
                "max_new_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": params.top_k,
            },
        }


def sampling(raw, thinking: bool) -> GenerationParams:
    """Validated sampling settings from a request's `params` (each one left out takes Qwen3's
    recommended value for the mode); ValueError saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError('"params" must be a JSON object')
    recommended = sampling_defaults(thinking)
    try:
        params = GenerationParams(
            max_new_tokens=_number(raw, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS, int),
            temperature=_number(raw, "temperature", recommended.temperature, float),
            top_p=_number(raw, "top_p", recommended.top_p, float),
            top_k=_number(raw, "top_k", recommended.top_k, int),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad sampling settings: {err}") from None
    params.validate()
    return params


def _number(raw: dict, name: str, default, kind):
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be a whole number")
    return kind(value)


# ---- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatDelta:
    """Text a reply adds, split into reasoning and answer; `tokens` made so far."""

    reasoning: str
    answer: str
    tokens: int


@dataclass(frozen=True)
class ChatDone:
    """A reply's end and its figures."""

    tokens: int
    ttft_s: float | None
    elapsed_s: float
    finish_reason: str | None
    dropped_turns: int
    done: bool = True


@dataclass(frozen=True)
class BenchmarkProgress:
    """A run's progress figures and the samples finished since the line before."""

    progress: dict
    new_samples: list


@dataclass(frozen=True)
class BenchmarkDone:
    """A finished run's result (`bench.BenchmarkResult.to_dict()`)."""

    result: dict


@dataclass(frozen=True)
class Cancelled:
    """The run was cancelled by its owner."""

    cancelled: bool = True


@dataclass(frozen=True)
class StreamError:
    """What ended a stream that had already begun: message, code and HTTP status."""

    error: str
    code: str
    status: int


Event = ChatDelta | ChatDone | BenchmarkProgress | BenchmarkDone | Cancelled | StreamError
# The key that names each kind of line; a line with none of them is a ChatDelta.
_KINDS = (
    ("error", StreamError),
    ("done", ChatDone),
    ("progress", BenchmarkProgress),
    ("result", BenchmarkDone),
    ("cancelled", Cancelled),
)


def encode(event: Event) -> bytes:
    """One event as its NDJSON line."""
    payload = asdict(event)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode(line: str | bytes) -> Event:
    """The event of one NDJSON line; ValueError for a line that is none."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("an event line must be a JSON object")
    kind = next((kind for key, kind in _KINDS if key in data), ChatDelta)
    try:
        return kind(**data)
    except TypeError as err:
        raise ValueError(f"not a {kind.__name__} line: {err}") from None
