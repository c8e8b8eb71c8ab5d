"""The engine's value types and errors: what callers hand it and what it hands back.

No vLLM here: the HTTP layer, the benchmark and the tests use these without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ErrorCode(StrEnum):
    """The machine-readable code of every refusal the server sends, over every API: clients
    decide by the code, never by a message's wording (which may change)."""

    BAD_REQUEST = "bad_request"  # the request itself is wrong; sending it again will not help
    UNAUTHORIZED = "unauthorized"  # missing or wrong bearer token
    NOT_FOUND = "not_found"  # a route this server does not offer
    BENCHMARK_RUNNING = "benchmark_running"  # one benchmark at a time, over every UI worker
    TOO_LARGE = "too_large"  # a body or batch over the server's limit
    BUSY = "busy"  # past the admission limit: try again shortly
    NOT_READY = "not_ready"  # starting, restarting or failed
    SHUTTING_DOWN = "shutting_down"  # the server is stopping
    INTERNAL = "internal"  # anything else


class ServiceError(Exception):
    """An error the server answers with: its code and HTTP status go with the class."""

    code: ErrorCode = ErrorCode.INTERNAL
    http_status: int = 500

    @property
    def retry_later(self) -> bool:
        """Whether the same request may succeed later (a 503, sent with Retry-After)."""
        return self.http_status == 503


class RequestError(ServiceError, ValueError):
    """A request the engine will not run (too long, bad sampling values); it keeps serving."""

    code, http_status = ErrorCode.BAD_REQUEST, 422


class EngineUnavailable(ServiceError, RuntimeError):
    """The engine cannot take the request now: starting, failed, restarting or shut down."""

    code, http_status = ErrorCode.NOT_READY, 503


class ServerStopping(EngineUnavailable):
    """The server is shutting down: requests in flight end, new ones are refused."""

    code = ErrorCode.SHUTTING_DOWN

    def __init__(self, message: str = "the server is shutting down; try again once it is back"):
        super().__init__(message)


class EngineBusy(ServiceError, RuntimeError):
    """Admitting the request would exceed the configured limit; try again shortly."""

    code, http_status = ErrorCode.BUSY, 503


@dataclass(frozen=True)
class GenerationParams:
    """Per-request sampling settings; the defaults are Qwen3's recommended non-thinking sampling
    (temperature 0.7, top-p 0.8, top-k 20), which `engine.qwen3.prompt` names as such."""

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    ignore_eos: bool = False
    seed: int | None = None

    def validate(self) -> None:
        """Raise RequestError naming the first value out of range."""
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise RequestError(
                f"max_new_tokens must be a whole number >= 1, got {self.max_new_tokens!r}"
            )
        if not 0.0 <= self.temperature <= 2.0:
            raise RequestError(f"temperature must be within 0..2, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise RequestError(f"top_p must be within (0, 1], got {self.top_p!r}")
        if not (self.top_k == -1 or 1 <= self.top_k <= 1000):
            raise RequestError(f"top_k must be -1 (off) or within 1..1000, got {self.top_k!r}")


GREEDY = GenerationParams(temperature=0.0, top_p=1.0, top_k=-1)


@dataclass(frozen=True)
class Chunk:
    """One streamed piece of a reply."""

    text: str  # new text since the previous chunk
    output_tokens: int  # so far, counted from token ids
    finished: bool
    finish_reason: str | None
    ttft_s: float | None  # seconds from submission to the first token
    elapsed_s: float


@dataclass(frozen=True)
class Completion:
    """One finished request of a batch."""

    index: int
    token_ids: list[int]
    text: str
    prompt_tokens: int
    ttft_s: float | None
    latency_s: float
    finish_reason: str | None
    rank: int | None = None  # the data-parallel rank that served it (None: not known)

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class EngineStatus:
    """What the engine is doing, for status lines and readiness checks."""

    phase: str  # idle, loading, warming, ready, failed, stopped
    message: str
    progress: float | None = None
    error: str | None = None
    startup_seconds: float | None = None
    info: dict = field(default_factory=dict)
    # Start-up phases finished so far, in order: (name, seconds); and when the current began.
    startup_phases: tuple[tuple[str, float], ...] = ()
    phase_started: float | None = None  # time.time() at the start of the current phase

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def phases_text(self) -> str:
        """The finished start-up phases: 'model 0 s · import 20 s · engine 20 s'."""
        return " · ".join(f"{name} {took:.0f} s" for name, took in self.startup_phases)

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (the UI process reads the status over HTTP)."""
        return {
            "phase": self.phase,
            "message": self.message,
            "progress": self.progress,
            "error": self.error,
            "startup_seconds": self.startup_seconds,
            "info": self.info,
            "startup_phases": [list(p) for p in self.startup_phases],
            "phase_started": self.phase_started,
        }

    @classmethod
    def from_dict(cls, data: dict) -> EngineStatus:
        phases = tuple((str(name), float(took)) for name, took in data.get("startup_phases", ()))
        return cls(
            phase=data["phase"],
            message=data["message"],
            progress=data.get("progress"),
            error=data.get("error"),
            startup_seconds=data.get("startup_seconds"),
            info=data.get("info") or {},
            startup_phases=phases,
            phase_started=data.get("phase_started"),
        )
