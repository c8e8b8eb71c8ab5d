"""Chat load as browsers make it: N Gradio sessions against the UI and the same N on `/v1`.

    python -m perf.load --ui http://127.0.0.1:7860 --api http://127.0.0.1:8000 \
        --users 1,16,64,256 --max-tokens 256 --repeat 2 --out runs/load.json

Each UI user is one Gradio session speaking Gradio's queue protocol as a browser tab does. It
first opens the page (`GET /`, keeping the cookies it sets, as a browser does: with several UI
workers the front's affinity cookie keeps the tab on its worker) and sends its first event (the
status line's timer tick, `POST /gradio_api/run/predict`), which makes Gradio set up the
session, as a page that has been open a moment has; `--cold` leaves both out, so that each
chat also pays for a new session (and, with no cookie, goes where its session hash says). All
users send their message at once: `POST /gradio_api/queue/join` for the `chat` endpoint, then
one server-sent-event stream (`GET /gradio_api/queue/data`) with a `process_generating`
message per update and `process_completed` last. Each API user is one streamed
`POST /v1/chat/completions` with the same messages and sampling. Every user has an
`httpx.AsyncClient` of its own (its connections and cookies, as each browser has: one client
shared by hundreds of streams spends seconds in its own connection pool and measures itself),
made before the wave and closed after it; all users of a wave start at once; waves alternate UI
and API on the same engine, one after another, each once the engine is idle.

Per wave: seconds from the start to each session's first and last chunk (p50, p95, max), the
engine's own time to first token over the wave (vLLM's `vllm:time_to_first_token_seconds`
histogram from `/metrics`, before and after), for UI sessions when Gradio began their handler
(its `process_starts` message: the time the queue and the front took), the chunks per session
and every failure (an HTTP error, an error event, a stream without text, a timeout).
`gradio_client` is not used: with several jobs per client it adds seconds of its own under
concurrency. Above 256 users a wave is spread over several processes (one per 256 users, or
`--processes N`), which open their pages, then start their sessions at one agreed moment: one
Python process streaming 1,000 sessions is itself the limit. The table says how many it used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field

import httpx

QUESTIONS = (
    "什么是 CUDA 中的 warp？warp divergence 为什么会降低性能？",
    "共享内存的 bank conflict 是怎么产生的？如何避免？",
    "Explain in three sentences how a KV cache speeds up LLM decoding.",
    "GPU 的全局内存合并访问（coalescing）是什么意思？",
)
SYSTEM_PROMPT = "You are a helpful assistant."
TTFT_METRIC = "vllm:time_to_first_token_seconds"


@dataclass
class Session:
    """One user's stream: when its chunks came, relative to the wave's start."""

    first_s: float | None = None
    last_s: float | None = None
    started_s: float | None = None  # UI only: Gradio's `process_starts` (the handler began)
    chunks: int = 0
    text_chars: int = 0
    error: str | None = None


@dataclass
class Wave:
    """One wave of users on one path, summarised."""

    path: str  # "ui" or "api"
    users: int
    first_p50_s: float | None
    first_p95_s: float | None
    first_max_s: float | None
    last_p50_s: float | None
    last_p95_s: float | None
    last_max_s: float | None
    engine_ttft_p50_s: float | None
    engine_ttft_p95_s: float | None
    started_p50_s: float | None  # UI: when Gradio began the handler (its queue's share)
    started_p95_s: float | None
    chunks_min: int
    chunks_mean: float
    failures: int
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    processes: int = 1  # load-generating processes the wave's sessions were spread over
    sessions: int = 0  # sessions summarised (every user's, from every process)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear between ranks), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def histogram(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a Prometheus histogram, summed over its label sets."""
    buckets: dict[float, float] = {}
    pattern = re.compile(rf"^{re.escape(name)}_bucket\{{(.*)\}} ([0-9.e+-]+)$")
    for line in metrics_text.splitlines():
        found = pattern.match(line)
        if not found:
            continue
        le = re.search(r'le="([^"]+)"', found.group(1))
        if le:
            bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
            buckets[bound] = buckets.get(bound, 0.0) + float(found.group(2))
    return buckets


def histogram_quantile(before: dict, after: dict, q: float) -> float | None:
    """The q-quantile of the observations between two readings, linear inside a bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    target = counts[-1] * q
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= target:
            if bound == float("inf"):
                return previous_bound
            share = (target - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


class Target:
    """The app under load: where its UI and API answer, and how to call them."""

    def __init__(self, ui: str, api: str, token: str | None, model: str | None):
        self.ui = ui.rstrip("/")
        self.api = api.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.model = model
        self.fn_index: int | None = None
        self.tick_index: int | None = None  # the status line's timer, a page's first event
        self.prefix = "/gradio_api"

    async def prepare(self, client: httpx.AsyncClient, ui: bool = True) -> None:
        """Find the chat endpoint's fn_index (`ui`) and the served model's name."""
        if ui:
            await self._find_chat(client)
        if self.model is None:
            models = (await client.get(self.api + "/v1/models", headers=self.headers)).json()
            self.model = models["data"][0]["id"]

    async def _find_chat(self, client: httpx.AsyncClient) -> None:
        config = (await client.get(self.ui + "/config")).json()
        self.prefix = config.get("api_prefix", "/gradio_api")
        for dependency in config["dependencies"]:
            if dependency.get("api_name") == "chat":
                self.fn_index = dependency["id"]
            if any(t[1] == "tick" for t in dependency.get("targets", ()) if t):
                self.tick_index = dependency["id"]
        if self.fn_index is None:
            raise RuntimeError("the UI has no 'chat' endpoint")

    async def metrics(self, client: httpx.AsyncClient) -> str:
        """vLLM's Prometheus text, or '' where the API does not answer."""
        try:
            response = await client.get(self.api + "/metrics", headers=self.headers)
        except httpx.HTTPError:
            return ""
        return response.text if response.status_code == 200 else ""

    async def wait_idle(self, client: httpx.AsyncClient, timeout: float = 120) -> None:
        """Until the engine holds no request (the app's /stats), or the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                stats = (await client.get(self.api + "/stats")).json()
                if stats.get("unfinished", 0) == 0:
                    return
            except (httpx.HTTPError, ValueError):
                return
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class Request:
    """What every user of a wave asks."""

    max_tokens: int
    thinking: bool
    temperature: float
    top_p: float
    top_k: int


class Tab:
    """One user: a browser tab (or one API client) with connections and cookies of its own,
    as every browser has; its Gradio session, once its page is open."""

    def __init__(self, timeout: httpx.Timeout):
        # A client of its own per user: one client shared by hundreds of streams spends most
        # of its time in its connection pool (a scan of every connection per request) and
        # delays every user by seconds. The SSL context is shared: building one is costly.
        self.client = httpx.AsyncClient(timeout=timeout, verify=_SSL)
        self.session_hash = uuid.uuid4().hex[:11]

    async def open_page(self, target: Target) -> None:
        """The page (its cookies kept, as a browser does: with several UI workers the front's
        affinity cookie keeps the tab on its worker), then its first event (the status tick),
        which sets the session up in Gradio."""
        await self.client.get(target.ui + "/")
        if target.tick_index is not None:
            body = {"data": [], "fn_index": target.tick_index, "session_hash": self.session_hash}
            await self.client.post(target.ui + target.prefix + "/run/predict", json=body)

    async def close(self) -> None:
        await self.client.aclose()


_SSL = ssl.create_default_context()


async def ui_user(target: Target, question: str, req: Request, start: float, tab: Tab) -> Session:
    """One browser tab's chat over Gradio's queue protocol."""
    session, client = Session(), tab.client
    session_hash = tab.session_hash
    data = [
        question,
        [],
        SYSTEM_PROMPT,
        req.thinking,
        req.temperature,
        req.top_p,
        req.top_k,
        req.max_tokens,
    ]
    body = {
        "data": data,
        "fn_index": target.fn_index,
        "session_hash": session_hash,
        "event_data": None,
        "trigger_id": None,
    }
    base = target.ui + target.prefix
    joined = await client.post(base + "/queue/join", json=body)
    if joined.status_code != 200:
        session.error = f"join HTTP {joined.status_code}: {joined.text[:200]}"
        return session
    params = {"session_hash": session_hash}
    async with client.stream("GET", base + "/queue/data", params=params) as stream:
        if stream.status_code != 200:
            session.error = f"stream HTTP {stream.status_code}"
            return session
        async for line in stream.aiter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            kind = message.get("msg")
            now = time.perf_counter() - start
            if kind == "process_starts" and session.started_s is None:
                session.started_s = now
            if kind == "process_generating":
                session.chunks += 1
                session.first_s = session.first_s if session.first_s is not None else now
                session.last_s = now
                session.text_chars += len(json.dumps(message.get("output", {}).get("data")))
            elif kind == "process_completed":
                session.last_s = now
                if not message.get("success", False):
                    output = message.get("output") or {}
                    session.error = str(output.get("error") or message)[:300]
                return session
            elif kind == "close_stream":
                break
    session.error = session.error or "stream closed before process_completed"
    return session


async def api_user(target: Target, question: str, req: Request, start: float, tab: Tab) -> Session:
    """One streamed chat completion from the OpenAI-compatible API."""
    session, client = Session(), tab.client
    body = {
        "model": target.model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ],
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,
        "stream": True,
        "chat_template_kwargs": {"enable_thinking": req.thinking},
    }
    url = target.api + "/v1/chat/completions"
    async with client.stream("POST", url, json=body, headers=target.headers) as stream:
        if stream.status_code != 200:
            session.error = f"HTTP {stream.status_code}: {(await stream.aread())[:200]!r}"
            return session
        async for line in stream.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            now = time.perf_counter() - start
            if payload == "[DONE]":
                session.last_s = session.last_s if session.last_s is not None else now
                return session
            event = json.loads(payload)
            if "error" in event:
                session.error = str(event["error"])[:300]
                return session
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = (delta.get("content") or "") + (delta.get("reasoning") or "")
                piece += delta.get("reasoning_content") or ""
                if piece:
                    session.chunks += 1
                    session.text_chars += len(piece)
                    session.first_s = session.first_s if session.first_s is not None else now
                    session.last_s = now
    session.error = "stream ended without [DONE]"
    return session


USERS_PER_PROCESS = 256


def processes_for(users: int, asked: int | None) -> int:
    """Load-generating processes for a wave: `asked`, or one per 256 users (one Python process
    streaming 1,000 sessions is itself the limit), never more than the users."""
    return max(1, min(users, asked or -(-users // USERS_PER_PROCESS)))


async def run_wave(
    client,
    target: Target,
    path: str,
    users: int,
    req: Request,
    timeout: float,
    cold: bool,
    processes: int = 1,
) -> Wave:
    """Start `users` sessions on `path` at once, each from a client of its own (`client` only
    watches the engine), spread over `processes` processes that start together; summarise."""
    await target.wait_idle(client)
    shares = [list(range(users))[p::processes] for p in range(processes)]
    if processes == 1:
        async with _open_tabs(target, path, users, timeout, cold) as tabs:
            before = histogram(await target.metrics(client), TTFT_METRIC)
            sessions, wall = await _sessions(target, path, req, timeout, tabs, shares[0])
    else:
        async with _Spread(target, path, req, timeout, cold, shares) as spread:
            before = histogram(await target.metrics(client), TTFT_METRIC)
            sessions, wall = await spread.run()
    after = histogram(await target.metrics(client), TTFT_METRIC)
    wave = summarise(path, users, sessions, before, after, wall)
    wave.processes, wave.sessions = processes, len(sessions)
    return wave


class _Spread:
    """A wave's sessions over several processes: each opens its users' pages, says it is
    ready, and starts its sessions at one wall-clock moment given to all, so the sessions'
    times (from that moment) are comparable across processes."""

    def __init__(self, target, path, req, timeout, cold, shares):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no copy of this process's loop
        self.pipes, self.children = [], []
        for share in shares:
            mine, theirs = context.Pipe()
            args = (theirs, target, path, req, timeout, cold, share)
            self.children.append(context.Process(target=_share_process, args=args, daemon=True))
            self.pipes.append(mine)

    async def __aenter__(self):
        for child in self.children:
            child.start()
        for pipe in self.pipes:  # each has opened its pages
            message = await asyncio.to_thread(pipe.recv)
            if message != "ready":
                raise RuntimeError(f"a load process failed: {message}")
        return self

    async def run(self) -> tuple[list[Session], float]:
        start = time.time() + 0.5
        for pipe in self.pipes:
            pipe.send(start)
        sessions: list[Session] = []
        wall = 0.0
        for pipe in self.pipes:
            rows, their_wall = await asyncio.to_thread(pipe.recv)
            sessions += [Session(**row) for row in rows]
            wall = max(wall, their_wall)
        return sessions, wall

    async def __aexit__(self, *exc):
        for child in self.children:
            await asyncio.to_thread(child.join, 30)
            if child.is_alive():
                child.kill()


def _share_process(pipe, target, path, req, timeout, cold, share) -> None:
    """A load process: its share of a wave's users (see `_Spread`)."""
    try:
        asyncio.run(_share(pipe, target, path, req, timeout, cold, share))
    except Exception as err:  # the parent waits for a message either way
        pipe.send(f"{type(err).__name__}: {err}")


async def _share(pipe, target, path, req, timeout, cold, share) -> None:
    async with _open_tabs(target, path, len(share), timeout, cold) as tabs:
        pipe.send("ready")
        start = await asyncio.to_thread(pipe.recv)
        await asyncio.sleep(max(0.0, start - time.time()))
        sessions, wall = await _sessions(target, path, req, timeout, tabs, share)
        pipe.send(([asdict(s) for s in sessions], wall))


@asynccontextmanager
async def _open_tabs(target, path: str, count: int, timeout: float, cold: bool):
    """`count` users' tabs, each with its own client; a UI tab's page opened first (unless
    `cold`); every client closed on leaving."""
    tabs = [Tab(httpx.Timeout(timeout, connect=30)) for _ in range(count)]
    try:
        if path == "ui" and not cold:
            await asyncio.gather(*(tab.open_page(target) for tab in tabs))
        yield tabs
    finally:
        await asyncio.gather(*(tab.close() for tab in tabs))


async def _sessions(target, path, req, timeout, tabs, numbers) -> tuple[list[Session], float]:
    """Every tab's session started at once (user `numbers[i]` on `tabs[i]`); (the sessions,
    the wave's wall seconds)."""
    user = ui_user if path == "ui" else api_user
    start = time.perf_counter()

    async def bounded(i: int) -> Session:
        question = f"{QUESTIONS[numbers[i] % len(QUESTIONS)]} ({numbers[i]})"
        try:
            return await asyncio.wait_for(user(target, question, req, start, tabs[i]), timeout)
        except TimeoutError:
            return Session(error=f"no end within {timeout:.0f} s")
        except (httpx.HTTPError, ValueError) as err:
            return Session(error=f"{type(err).__name__}: {err}")

    sessions = await asyncio.gather(*(bounded(i) for i in range(len(tabs))))
    return sessions, time.perf_counter() - start


def summarise(path, users, sessions: list[Session], before, after, wall) -> Wave:
    """A Wave from its sessions; a session with no text or with an error is a failure."""
    failed = [s for s in sessions if s.error or not s.chunks]
    firsts = [s.first_s for s in sessions if s.first_s is not None]
    starts = [s.started_s for s in sessions if s.started_s is not None]
    lasts = [s.last_s for s in sessions if s.last_s is not None]
    chunks = [s.chunks for s in sessions]
    errors = sorted({s.error or "no text streamed" for s in failed})
    return Wave(
        path,
        users,
        _round(percentile(firsts, 50)),
        _round(percentile(firsts, 95)),
        _round(max(firsts, default=None)),
        _round(percentile(lasts, 50)),
        _round(percentile(lasts, 95)),
        _round(max(lasts, default=None)),
        _round(histogram_quantile(before, after, 0.50)),
        _round(histogram_quantile(before, after, 0.95)),
        _round(percentile(starts, 50)),
        _round(percentile(starts, 95)),
        min(chunks, default=0),
        round(sum(chunks) / max(len(chunks), 1), 1),
        len(failed),
        errors[:5],
        round(wall, 3),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def table(waves: list[Wave]) -> str:
    """The waves as a Markdown table."""

    def cell(value):
        return "-" if value is None else f"{value:.2f}"

    lines = [
        "| users | path | first p50 / p95 / max s | last p50 / p95 / max s "
        "| engine TTFT p50 / p95 s | UI handler began p50 / p95 s | chunks min / mean | failures "
        "| load processes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in waves:
        lines.append(
            f"| {w.users} | {w.path} | {cell(w.first_p50_s)} / {cell(w.first_p95_s)} / "
            f"{cell(w.first_max_s)} | {cell(w.last_p50_s)} / {cell(w.last_p95_s)} / "
            f"{cell(w.last_max_s)} | {cell(w.engine_ttft_p50_s)} / {cell(w.engine_ttft_p95_s)} "
            f"| {cell(w.started_p50_s)} / {cell(w.started_p95_s)} "
            f"| {w.chunks_min} / {w.chunks_mean} | {w.failures}"
            + (f" ({w.errors[0][:60]})" if w.errors else "")
            + f" | {w.processes} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Wave]:
    """Every wave the flags ask for, in order: per user count, the paths alternating."""
    target = Target(args.ui, args.api, args.api_token, args.model)
    req = Request(args.max_tokens, args.thinking, args.temperature, args.top_p, args.top_k)
    timeout = httpx.Timeout(args.timeout, connect=30)
    waves: list[Wave] = []
    async with httpx.AsyncClient(timeout=timeout) as client:
        await target.prepare(client, ui="ui" in args.paths)
    for users in args.users:
        for _ in range(args.repeat):
            for path in args.paths:
                spread = processes_for(users, args.processes)
                async with httpx.AsyncClient(timeout=timeout) as client:
                    wave = await run_wave(
                        client, target, path, users, req, args.timeout, args.cold, spread
                    )
                waves.append(wave)
                print(table([wave]).splitlines()[-1], flush=True)
    return waves


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m perf.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ui", default="http://127.0.0.1:7860", help="the app's UI address")
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the app's API address")
    parser.add_argument("--api-token", default=None, help="the app's --api-token, if any")
    parser.add_argument("--model", default=None, help="model name for /v1 (default: /v1/models)")
    parser.add_argument("--users", default="1,16,64", help="comma-separated user counts")
    parser.add_argument("--paths", default="ui,api", help="ui, api or both, in wave order")
    parser.add_argument("--repeat", type=int, default=1, help="waves per user count and path")
    parser.add_argument("--max-tokens", type=int, default=256, help="new tokens per reply")
    parser.add_argument(
        "--thinking",
        type=lambda s: s.lower() in ("1", "on", "true"),
        default=True,
        help="on or off (default on)",
    )
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per session")
    parser.add_argument(
        "--cold", action="store_true", help="UI users chat from a page that has sent nothing yet"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="load-generating processes per wave (default: one per 256 users)",
    )
    parser.add_argument("--out", default=None, help="write the waves as JSON here")
    args = parser.parse_args(argv)
    args.users = [int(u) for u in args.users.split(",")]
    args.paths = [p.strip() for p in args.paths.split(",")]
    if set(args.paths) - {"ui", "api"}:
        parser.error("--paths takes ui and api")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    waves = asyncio.run(run(args))
    print(table(waves), flush=True)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps([asdict(w) for w in waves], indent=1))
    return 1 if any(w.failures for w in waves) else 0


if __name__ == "__main__":
    sys.exit(main())
