"""The HTTP layer, outside the engine: the course evaluator's routes, vLLM's OpenAI-compatible
server on the shared engine, the UI process's private routes, and one guard in front of them
all (bearer token, readiness, admission for vLLM's routes), served by uvicorn on the engine's
event loop; every refusal follows one error contract (`errors`).

| module | job |
|---|---|
| `errors` | the error contract: an exception to a response (code, status, `Retry-After`) |
| `guard` | who may in: the token, the engine's readiness, the admission limit |
| `course` | `GET /`, `GET /stats`, `POST /predict` |
| `openai` | vLLM's own OpenAI app and `/metrics`, rebuilt on each engine |
| `internal` | the UI's routes: status, chat stream, benchmark stream, restart |
| `app` | the public and the private ASGI app |
| `runner` | uvicorn on the engine's loop (TCP and Unix socket) |
"""

from server.app import build_apps
from server.runner import HttpServers

__all__ = ["HttpServers", "build_apps"]
