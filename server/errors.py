"""The error contract of every HTTP answer: an exception becomes a response in one place.

Each refusal carries a machine-readable code (`engine.types.ErrorCode`); every 503 carries
`Retry-After`. Two shapes, one per family of routes:

- the course API and the UI's private routes: `{"error": "message", "code": "busy"}` (the
  course's evaluator reads `error`), and in an NDJSON stream a line
  `{"error": "message", "code": "busy", "status": 503}`;
- vLLM's OpenAI-compatible routes: vLLM's own `{"error": {"message", "type", "param", "code"}}`
  with `code` the HTTP status as a number, as in every error vLLM's routes send (its schema
  types it as an integer), and the string code beside it as `reason` (vLLM's error schema
  takes extra fields).
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from engine.types import ErrorCode, ServiceError
from protocol import StreamError

RETRY_AFTER_S = "5"
# vLLM's `type` for each status, as its own routes name them.
OPENAI_TYPES = {
    401: "AuthenticationError",
    404: "NotFoundError",
    409: "ConflictError",
    413: "BadRequestError",
    422: "BadRequestError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class Unauthorized(ServiceError):
    """Missing or wrong bearer token."""

    code, http_status = ErrorCode.UNAUTHORIZED, 401

    def __init__(self, message: str = "missing or wrong bearer token"):
        super().__init__(message)


class NotOffered(ServiceError):
    """A route this server turns off."""

    code, http_status = ErrorCode.NOT_FOUND, 404

    def __init__(self, message: str = "not offered by this server"):
        super().__init__(message)


class TooLarge(ServiceError, ValueError):
    """A body or a batch over the server's limit."""

    code, http_status = ErrorCode.TOO_LARGE, 413


class BadRequest(ServiceError, ValueError):
    """A request that is malformed (JSON, fields, values)."""

    code, http_status = ErrorCode.BAD_REQUEST, 422


class BenchmarkRunning(ServiceError):
    """A benchmark is already running (one at a time, over every UI worker)."""

    code, http_status = ErrorCode.BENCHMARK_RUNNING, 409

    def __init__(self, message: str = "A benchmark is already running; wait for it or cancel it."):
        super().__init__(message)


def classify(err: BaseException) -> tuple[ErrorCode, int]:
    """(code, HTTP status) of any error a route ends with: bad input is a ValueError (bad
    JSON, a bad benchmark spec) or a TypeError; anything else is the server's own fault."""
    if isinstance(err, ServiceError):
        return err.code, err.http_status
    if isinstance(err, (ValueError, TypeError)):
        return ErrorCode.BAD_REQUEST, 422
    return ErrorCode.INTERNAL, 500


def error_body(err: BaseException, openai_shape: bool = False) -> dict:
    """The JSON body of `err` in its route family's shape."""
    code, status = classify(err)
    if openai_shape:
        kind = OPENAI_TYPES.get(status, "BadRequestError")
        info = {"message": str(err), "type": kind, "param": None, "code": status}
        return {"error": {**info, "reason": code}}
    return {"error": str(err), "code": code}


def error_headers(err: BaseException) -> dict[str, str]:
    """Retry-After on every 503; the bearer challenge on a 401."""
    status = classify(err)[1]
    if status == 503:
        return {"Retry-After": RETRY_AFTER_S}
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    return {}


def error_response(err: BaseException, openai_shape: bool = False) -> JSONResponse:
    """The one mapping from an exception to an HTTP answer."""
    status = classify(err)[1]
    return JSONResponse(
        error_body(err, openai_shape), status_code=status, headers=error_headers(err)
    )


def error_line(err: BaseException) -> StreamError:
    """`err` as the last event of an NDJSON stream that has already begun (status as a field)."""
    return StreamError(**error_body(err), status=classify(err)[1])


def with_retry_after(start: dict) -> dict:
    """A response's start message, with Retry-After added to a 503 that has none (vLLM's
    routes answering their own queue limit, or a request ended by a restart)."""
    if start.get("status") != 503:
        return start
    headers = list(start.get("headers", ()))
    if any(name.lower() == b"retry-after" for name, _ in headers):
        return start
    return {**start, "headers": [*headers, (b"retry-after", RETRY_AFTER_S.encode())]}
