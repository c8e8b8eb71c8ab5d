"""vLLM's own OpenAI-compatible server and Prometheus metrics, on the shared engine.

The routes are vLLM's (`/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/tokenize`,
`/health`, `/metrics`, ...), built by vLLM's `build_app` and `init_app_state` on the running
`AsyncLLM`: the `openai` package, Open WebUI, LangChain and `vllm bench serve` share the engine
with the chat tab, the benchmark and the course API. vLLM's `run_server` is not used: it owns
the engine and installs signal handlers.

- Every new engine (start, restart) gets the app's state rebuilt on its AsyncLLM before it says
  ready, and one streamed chat completion goes through vLLM's serving code then, so that the
  first client does not pay for its first-use set-up (`attach`).
- Chat completions carry Qwen3's reasoning (split off by vLLM's `qwen3` reasoning parser) as
  `reasoning`, vLLM's field, and also as `reasoning_content`, the older name many clients read
  (`with_reasoning_content`: a byte-level copy, no JSON parsing per event).
"""

from __future__ import annotations

import logging
import os
import re

from starlette.types import Receive, Scope, Send

from engine import Engine
from engine.runtime.vllm_args import server_args

CHAT_PATH = "/v1/chat/completions"
# A JSON string value (or null) of the `reasoning` field, as vLLM writes it.
REASONING = re.compile(rb'"reasoning":\s*("(?:[^"\\]|\\.)*")')


SERVING_LOGGERS = (
    "vllm.entrypoints.openai.chat_completion.serving",
    "vllm.entrypoints.openai.completion.serving",
)


class _EndedStreams(logging.Filter):
    """vLLM's serving code logs a traceback for any error that ends a stream; for streams the
    app ended on purpose (a restart, a shutdown: a 503 `GracefulHTTPError`) one line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from vllm.exceptions import GracefulHTTPError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, GracefulHTTPError):
            record.msg, record.args = "stream ended: %s", (error,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_ended_streams() -> None:
    for name in SERVING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _EndedStreams) for f in logger.filters):
            logger.addFilter(_EndedStreams())


class _ServerThatStaysUp:
    """vLLM's engine-error handler stops `app.state.server` when the engine dies (unless
    VLLM_KEEP_ALIVE_ON_ENGINE_DEATH); here the service restarts the engine instead."""

    should_exit = False


class OpenAIApp:
    """vLLM's FastAPI app on the current engine (None until the first engine is ready)."""

    def __init__(self, course_router=None):
        self.course_router = course_router  # listed in vLLM's /docs beside its own routes
        self.app = None
        self.args = None
        self.engine: Engine | None = None  # the engine the app's state belongs to
        os.environ["VLLM_KEEP_ALIVE_ON_ENGINE_DEATH"] = "1"

    def serves(self, engine: Engine) -> bool:
        """Whether the app's state is built on `engine` (so its routes can answer)."""
        return self.app is not None and self.engine is engine

    async def attach(self, engine: Engine) -> None:
        """Build vLLM's app (once) and its state on `engine`'s AsyncLLM (every start), then
        send one streamed chat completion through it."""
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app

        llm = engine.async_llm
        tasks = await llm.get_supported_tasks()
        quiet_ended_streams()
        if self.app is None:
            self.args = server_args(engine.config, engine.model, llm.vllm_config)
            self.app = build_app(self.args, tasks, llm.model_config)
            if self.course_router is not None:
                self.app.include_router(self.course_router)
            self.app.state.server = _ServerThatStaysUp()
        else:
            self.args.structured_outputs_config = llm.vllm_config.structured_outputs_config
        await init_app_state(llm, self.app.state, self.args, tasks)
        await self._first_request(engine)
        self.engine = engine

    async def _first_request(self, engine: Engine) -> None:
        """One short streamed chat completion through vLLM's serving code (in-process)."""
        import httpx

        body = {
            "model": engine.model.served_name,
            "messages": [{"role": "user", "content": "warm-up"}],
            "max_tokens": 2,
            "stream": True,
        }
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
            async with client.stream("POST", CHAT_PATH, json=body) as response:
                async for _ in response.aiter_bytes():
                    pass
                if response.status_code != 200:
                    raise RuntimeError(f"the OpenAI API's first request got {response.status_code}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == CHAT_PATH and scope["type"] == "http":
            send = with_reasoning_content(send)
        await self.app(scope, receive, send)


def alias(data: bytes) -> bytes:
    """`data` with `"reasoning_content": <the same string>` after each `"reasoning": "..."`."""
    if b'"reasoning":' not in data or b'"reasoning_content"' in data:
        return data
    return REASONING.sub(lambda m: m.group(0) + b',"reasoning_content":' + m.group(1), data)


def with_reasoning_content(send: Send) -> Send:
    """Wrap an ASGI `send` so chat completions (whole or streamed) get `reasoning_content`."""
    held: dict = {"start": None, "mode": "pass", "buffer": b""}

    async def relay(message) -> None:
        if message["type"] == "http.response.start":
            kind = dict(message.get("headers", ())).get(b"content-type", b"")
            if kind.startswith(b"application/json"):
                held["mode"], held["start"] = "json", message
                return
            if kind.startswith(b"text/event-stream"):
                held["mode"] = "events"
            await send(message)
            return
        if message["type"] != "http.response.body" or held["mode"] == "pass":
            await send(message)
            return
        more = message.get("more_body", False)
        if held["mode"] == "json":
            held["buffer"] += message.get("body", b"")
            if not more:
                await _send_json(send, held["start"], alias(held["buffer"]))
            return
        # Events are rewritten whole; a partial one waits for its next piece.
        data = held["buffer"] + message.get("body", b"")
        cut = len(data) if not more else data.rfind(b"\n\n") + 2
        if cut <= 1 and more:
            held["buffer"] = data
            return
        held["buffer"] = data[cut:]
        await send({"type": "http.response.body", "body": alias(data[:cut]), "more_body": more})

    return relay


async def _send_json(send: Send, start: dict, body: bytes) -> None:
    headers = [(k, v) for k, v in start.get("headers", ()) if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})
